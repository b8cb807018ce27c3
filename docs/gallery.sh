#!/bin/sh
# Remakes every picture in docs/gallery through a running stack (`make up` in another terminal).
# Inputs are the sample images `genserve models samples` writes to var/samples/.
set -eu
cd "$(dirname "$0")/.."
G=.venv/bin/genserve
OUT=docs/gallery
mkdir -p "$OUT"
$G models samples >/dev/null

# Originals, shrunk to the size the results have.
.venv/bin/python - <<'PY'
from PIL import Image
for name, side in (("chelsea", 451), ("astronaut", 256), ("scream", 256), ("hubble", 256)):
    image = Image.open(f"var/samples/{name}.png").convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    image.save(f"docs/gallery/{name}.png", optimize=True)
PY

# DeepDream: EfficientNet-Lite0's default layers, then a deeper one over four octaves, then VGG16.
$G client dream var/samples/chelsea.png $OUT/chelsea-dream.png --jitter 16 --seed 1
$G client dream var/samples/chelsea.png $OUT/chelsea-dream-deep.png --layer blocks.10 --octaves 4 --jitter 16 --seed 1
$G client dream var/samples/coffee.png $OUT/coffee-dream-vgg16.png --backbone vgg16 --jitter 16 --seed 1

# Style transfer previews (256 px, 60 L-BFGS steps: the preview caps): one photo in two styles,
# then the first style with the photo's colours kept two ways.
$G client style-preview var/samples/astronaut.png $OUT/astronaut-scream.png --style var/samples/scream.png --seed 1
$G client style-preview var/samples/astronaut.png $OUT/astronaut-hubble.png --style var/samples/hubble.png --seed 1
$G client style-preview var/samples/astronaut.png $OUT/astronaut-scream-luminance.png \
    --style var/samples/scream.png --color luminance --seed 1
$G client style-preview var/samples/astronaut.png $OUT/astronaut-scream-histogram.png \
    --style var/samples/scream.png --color histogram --seed 1

# Latent space (the sample digits are the most typical of each class in MNIST's test split).
$G client sample $OUT/vae-samples.png --model mnist-vae-16d --n 32 --seed 7
$G client sample $OUT/gan-samples.png --model mnist-dcgan --n 32 --seed 7
$G client sample $OUT/fashion-gan-samples.png --model fashion-dcgan --n 32 --seed 7
$G client interpolate $OUT/vae-interpolation.png --model mnist-vae-16d \
    --start var/samples/digit-3.png --end var/samples/digit-7.png
$G client manifold $OUT/vae-manifold.png --model mnist-vae-2d --grid 15
$G client concept $OUT/vae-thicker.png --model mnist-vae-16d --concept thicker \
    --image var/samples/digit-7.png --strengths=-1,-0.5,0,0.5,1,1.5
$G client concept $OUT/vae-3-to-8.png --model mnist-vae-16d --concept 3-to-8 \
    --image var/samples/digit-3.png --strengths 0,0.5,1,1.5,2
