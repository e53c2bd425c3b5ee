#!/usr/bin/env python3
"""Copies ONNX Runtime's shared libraries out of an onnxruntime wheel.

    ort-extract.py WHEEL_DIR DEST

Takes the one `onnxruntime*.whl` in WHEEL_DIR and writes into DEST the
runtime library (`libonnxruntime.so.<version>`) and, from the GPU wheel, the
CUDA and TensorRT providers that ONNX Runtime loads from the same folder,
plus a `libonnxruntime.so` link to the runtime. Used by the images
(docker/Dockerfile) and by scripts/setup.sh (.tools/onnxruntime/lib).
"""

import glob
import os
import sys
import zipfile


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dest = sys.argv[1], sys.argv[2]
    wheels = glob.glob(os.path.join(src, "onnxruntime*.whl"))
    if len(wheels) != 1:
        sys.exit(f"ort-extract: expected one onnxruntime wheel in {src}, found {wheels}")
    os.makedirs(dest, exist_ok=True)
    runtime = None
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if not (name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime")):
                continue
            with z.open(name) as f, open(os.path.join(dest, base), "wb") as out:
                out.write(f.read())
            if base.startswith("libonnxruntime.so."):
                runtime = base
    if runtime is None:
        sys.exit(f"ort-extract: no libonnxruntime.so.* in {wheels[0]}")
    link = os.path.join(dest, "libonnxruntime.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(runtime, link)
    print(f"ort-extract: {runtime} and {len(os.listdir(dest)) - 2} provider(s) in {dest}")


if __name__ == "__main__":
    main()
