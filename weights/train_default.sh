#!/usr/bin/env bash
# Trains the shipped default detector (gmdf_cli/weights/shipped/gmdf-mnv2-dev.safetensors) from the development media, on the
# CPU, with gmdf's own commands. Usage:
#   bash weights/train_default.sh [MEDIA] [WORK] [EXTRA gmdf train OPTIONS...]
# MEDIA: the development media folder (default ../shared/media, laid out <source>/{real,fake}/...).
# WORK:  a new folder for the pools, the cache and the run (default ./default-run).
# The model lands in WORK/run/last.safetensors (the file the card ships); the card (gmdf_cli/weights/shipped/CARD.md) says how it
# was measured.
set -euo pipefail
MEDIA=$(cd "${1:-../shared/media}" && pwd)
WORK=${2:-default-run}
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
DETECTOR=()
if [[ -f "$MEDIA/../weights/detection_mobilenet0.25_Final.pth" ]]; then
  DETECTOR=(--detector-weights "$MEDIA/../weights")
fi

# 1. Pools (symlinks, nothing copied): real videos of the sources without fakes, and real vs generated still images
#    (prepared as the `images` domain but not trained on: its file sizes differ by class, see the card).
mkdir -p "$WORK/pool/videos" "$WORK/pool/images/real" "$WORK/pool/images/fake"
for src in liveportrait_driving deepfacelive_swap ghost_faceswap; do
  mkdir -p "$WORK/pool/videos/$src"
  for f in "$MEDIA/$src/real"/*; do
    case "$f" in *.mp4|*.webp|*.avi|*.mov|*.mkv) ln -sfn "$f" "$WORK/pool/videos/$src/" ;; esac
  done
done
ln -sfn "$MEDIA/simswap_faceswap/real" "$WORK/pool/images/real/simswap"
mkdir -p "$WORK/pool/images/real/ghost"
for f in "$MEDIA/ghost_faceswap/real"/*; do
  case "$f" in *.jpg|*.png) ln -sfn "$f" "$WORK/pool/images/real/ghost/" ;; esac
done
ln -sfn "$MEDIA/sd21_sdfd/fake" "$WORK/pool/images/fake/sd21"
ln -sfn "$MEDIA/stylegan_basemax/fake" "$WORK/pool/images/fake/stylegan"
# Real portrait photos against StyleGAN2 faces of one source, same size and format (300 px JPEG): the only
# generated faces that come with real photos made and stored the same way, so that a face's make, not its file, decides.
mkdir -p "$WORK/pool/hardfakes/real" "$WORK/pool/hardfakes/fake"
ln -sfn "$MEDIA/hardfakes_tharunnayak/real" "$WORK/pool/hardfakes/real/unsplash"
ln -sfn "$MEDIA/hardfakes_tharunnayak/fake" "$WORK/pool/hardfakes/fake/sg2"
# Real photos of many people: the first LFW photo of every second person whose name starts with A-M (N-Z, and
# every other LFW photo, stay unseen), and every third UTKFace crop of the first half in name order.
mkdir -p "$WORK/pool/photos/lfw" "$WORK/pool/photos/utk"
find "$MEDIA/lfw_mmehdig/real" -name '*_0001.jpg' | LC_ALL=C sort | grep -E '__lfw__[A-Ma-m][^/]*$' \
  | awk 'NR % 2 == 0' | while read -r f; do ln -sfn "$f" "$WORK/pool/photos/lfw/"; done
HALF=$(( $(find "$MEDIA/utkface_bagashvilit/real" -name '*.jpg' | wc -l) / 2 ))
find "$MEDIA/utkface_bagashvilit/real" -name '*.jpg' | LC_ALL=C sort | awk -v half="$HALF" 'NR <= half && NR % 3 == 0' \
  | while read -r f; do ln -sfn "$f" "$WORK/pool/photos/utk/"; done

# 2. Cross-identity blends made from the real videos (gmdf synth): the videos are dealt into pairs (an odd one
#    joins a pair), each blends only its group's faces, and prepare splits by group, so no held-out face is ever
#    seen in training. Then self-blends of the photos (landmark-hull masks), so every photo is in both classes.
gmdf synth --root "$WORK/pool/videos" --out "$WORK/cross" --kind cross --frames 12 --group-size 2 --seed 0 \
  "${DETECTOR[@]}"
gmdf synth --root "$WORK/pool/photos" --out "$WORK/photos" --kind sbi --group-size 2 --seed 0 "${DETECTOR[@]}"

# 3. Face crops, split by identity (one cache, one domain per source).
CACHE="$WORK/cache"
gmdf prepare --domain folder --root "$MEDIA/celebdf_hantschmann" --name celeb --group-by 'id[0-9]+' \
  --frames 32 --out "$CACHE" "${DETECTOR[@]}"
gmdf prepare --domain folder --root "$MEDIA/ffpp_icpr2020" --name ffpp --group-by '[0-9]{3}' \
  --frames 32 --out "$CACHE" "${DETECTOR[@]}"
gmdf prepare --domain folder --root "$WORK/cross" --name cross --group-by '^[^/]+' --out "$CACHE" "${DETECTOR[@]}"
gmdf prepare --domain folder --root "$WORK/pool/images" --name images --out "$CACHE" "${DETECTOR[@]}"
gmdf prepare --domain folder --root "$WORK/photos" --name photos --group-by '^[^/]+' --out "$CACHE" "${DETECTOR[@]}"
gmdf prepare --domain folder --root "$WORK/pool/hardfakes" --name hardfakes --out "$CACHE" "${DETECTOR[@]}"

# 4. GM-DF meta-learning on five domains (not `images`) plus self-blends made on the fly ("blend"), with
#    augmentation, from the ImageNet MobileNetV2 tower (mnv2, its default rate 3e-4; the meta-test domain has half
#    of each batch), every face shrunk to at most 160 px before the model, in training and in scanning (the
#    checkpoint carries it).
gmdf train --config mnv2 --domains celeb,ffpp,cross,photos,hardfakes --online-blend --augment \
  --face-px 160 --data "$CACHE" --out "$WORK/run" --epochs 2 --steps-per-epoch 100 --batch-size 30 --seed 0 "$@"
