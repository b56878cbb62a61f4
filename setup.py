"""vasa-jax: lifelike audio-driven talking faces in JAX/Flax (a re-creation of VASA-1)."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
LINES = [(line.split("#")[0].strip(), line.partition("#")[2])
         for line in (HERE / "requirements.txt").read_text().splitlines()]
# Lines tagged "# [serve]" are the web demo's extra (pip install "vasa-jax[serve]").
REQS = [req for req, note in LINES if req and "[serve]" not in note and not req.startswith("pytest")]
SERVE = [req for req, note in LINES if req and "[serve]" in note]

# Metadata lives in pyproject.toml (PEP 621); the dependencies come from requirements.txt here.
setup(
    packages=find_packages(include=["vasa_jax", "vasa_jax.*"]),
    include_package_data=True,
    package_data={"vasa_jax": ["assets/*/*", "assets/*/*/*"]},
    install_requires=REQS,
    extras_require={
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        "serve": SERVE,
    },
)
