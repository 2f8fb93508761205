"""fastvid: GPU-fast training and serving of TRN and TPN video action recognition."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version: dict[str, str] = {}
exec((HERE / "fastvid" / "version.py").read_text(), version)

# torch is pinned to the release that installs from local files on the project's machines and
# that torch-tensorrt 2.14 is built against.
INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "numpy",
    "pillow",
    "click>=8.1",
    "pyyaml>=6",
    "tqdm",
    "rich",
    "matplotlib",
]

EXTRAS = {
    "dali": ["nvidia-dali-cuda130==2.4.0"],
    # Cannot be installed on CPU-only machines without internet access beyond PyPI:
    # tensorrt-cu13-libs is a placeholder that downloads the libraries from NVIDIA's index.
    "trt": ["torch-tensorrt==2.14.*"],
    "onnx": ["onnx", "onnxscript", "onnxruntime"],
    # CPU engines (engines/openvino.py); 2026.4 is the release the engine tests and figures used.
    "openvino": ["openvino>=2026.4"],
    "video": ["av<19"],
    "tensorboard": ["tensorboard"],
}
EXTRAS["test"] = [
    "pytest>=8",
    "pytest-timeout",
    # Peer implementations used only by parity tests.
    "pretrainedmodels==0.7.4",
    "mmaction2==1.2.0",
    "mmengine",
    "mmcv-lite",
    "importlib_metadata<8",
    "scipy",
    "einops",
    "opencv-python-headless",
    *EXTRAS["dali"],
    *EXTRAS["onnx"],
    *EXTRAS["openvino"],
    *EXTRAS["video"],
]

setup(
    name="fastvid",
    version=version["__version__"],
    description="Train and serve TRN/TPN video action recognition as fast as NVIDIA hardware allows",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fastvid", "fastvid.*", "dali_pipelines", "dali_pipelines.*",
                                    "engines", "engines.*", "bench", "bench.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fastvid=fastvid.cli:main"]},
)
