"""Write the synthetic SALMA datasets to --out, in their real formats: RefCOCO, MeViS, LLaVA, GCG
(GranD-f, PSG, Flickr), Osprey-724K (region prompts), Chat-UniVi video QA and SA-V / Ref-SAV (mp4
videos written with OpenCV's 'mp4v' codec).

    python tools/data/make_synthetic.py --out data/synthetic --seed 0
    python tools/data/make_synthetic.py --out data/synthetic_real --height 480 --width 640 --num-images 20
    python tools/data/make_synthetic.py --out data/synthetic_distractor --distractor --height 128 --width 128
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.synthetic import make_synthetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=300, help="train images (RefCOCO-style)")
    parser.add_argument("--num-val-images", type=int, default=50)
    parser.add_argument("--num-videos", type=int, default=20, help="train videos (MeViS-style)")
    parser.add_argument("--num-val-videos", type=int, default=8, help="valid_u videos")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--relational-fraction", type=float, default=0.25)
    parser.add_argument("--num-llava", type=int, default=40)
    parser.add_argument("--num-gcg", type=int, default=40)
    parser.add_argument("--num-osprey", type=int, default=40, help="images with region records (each Osprey kind)")
    parser.add_argument("--num-video-qa", type=int, default=8, help="Chat-UniVi-style mp4 videos")
    parser.add_argument("--num-sav-videos", type=int, default=6, help="SA-V-style training videos")
    parser.add_argument("--num-ref-sav-videos", type=int, default=3, help="Ref-SAV-style evaluation videos")
    parser.add_argument("--num-flickr", type=int, default=40)
    parser.add_argument("--num-psg", type=int, default=40)
    parser.add_argument("--distractor", action="store_true",
                        help="RefCOCO images and MeViS videos with a large, saturated distractor that shares the "
                             "colour or the shape of a small target next to it (never referred to)")
    args = parser.parse_args()
    start = time.perf_counter()
    roots = make_synthetic(
        args.out, seed=args.seed, num_images=args.num_images, num_val_images=args.num_val_images,
        num_videos=args.num_videos, num_val_videos=args.num_val_videos, num_frames=args.num_frames,
        height=args.height, width=args.width, relational_fraction=args.relational_fraction,
        num_llava=args.num_llava, num_gcg=args.num_gcg, num_osprey=args.num_osprey, num_video_qa=args.num_video_qa,
        num_sav_videos=args.num_sav_videos, num_ref_sav_videos=args.num_ref_sav_videos, num_flickr=args.num_flickr,
        num_psg=args.num_psg, distractor=args.distractor)
    print(json.dumps(roots, indent=2))
    print(f"written in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
