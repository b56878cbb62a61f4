"""vasa-jax: lifelike audio-driven talking faces in JAX/Flax (a re-creation of VASA-1)."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
REQS = [
    line.split("#")[0].strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest",))
]

setup(
    name="vasa-jax",
    version="0.1.0",
    description="Audio-driven talking faces (VASA-1 style) in JAX/Flax",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vasa_jax", "vasa_jax.*"]),
    python_requires=">=3.10",
    install_requires=REQS,
    extras_require={
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
    entry_points={"console_scripts": ["vasa-jax=vasa_jax.cli:main"]},
)
