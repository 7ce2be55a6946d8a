# Resolve `type=` strings in the project's registries (scope `salma`) first.
default_scope = "salma"
custom_imports = dict(imports=["projects.salma"], allow_failed_imports=False)
