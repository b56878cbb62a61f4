"""launch/ scripts (syntax, dry runs, argument errors, shellcheck) and distributed.plan."""

import os
import shutil
import subprocess

import pytest

from vasa_jax import distributed

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPTS = [os.path.join(ROOT, "launch", n) for n in ("tpu_pod.sh", "slurm_gpu.sbatch", "local.sh")]


def _run(args, env=None):
  full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  full.update(env or {})
  return subprocess.run(["bash", *args], cwd=ROOT, env=full, capture_output=True, text=True,
                        timeout=30)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_syntax(script):
  assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
  r = subprocess.run(["shellcheck", *SCRIPTS], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout


# ----------------------------------------------------------------------------- tpu_pod.sh

TPU = "launch/tpu_pod.sh"
BASE = ["--name", "vasa", "--zone", "us-east5-a"]


def test_tpu_create_dry_run():
  r = _run([TPU, "create", *BASE, "--accelerator", "v5p-64", "--version", "v2-alpha-tpuv5",
            "--dry-run"])
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == ("gcloud compute tpus tpu-vm create vasa --zone us-east5-a "
                              "--accelerator-type v5p-64 --version v2-alpha-tpuv5")


def test_tpu_setup_dry_run_git_and_local():
  r = _run([TPU, "setup", *BASE, "--repo", "https://example.com/vasa-jax.git", "--dry-run"])
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  assert all(l.startswith("gcloud compute tpus tpu-vm ssh vasa --zone us-east5-a --worker=all --command ")
             for l in lines)
  assert "git clone --depth 1 https://example.com/vasa-jax.git" in lines[0]
  assert "jax[tpu]" in lines[-1] and "pip install -r requirements.txt" in lines[-1]
  r = _run([TPU, "setup", *BASE, "--repo", ".", "--dry-run"])
  assert r.returncode == 0, r.stderr
  assert "gcloud compute tpus tpu-vm scp --recurse ./. vasa:~/vasa-jax --zone us-east5-a --worker=all" \
      in r.stdout.replace("'", "")


def test_tpu_train_logs_stop_delete_dry_run():
  r = _run([TPU, "train", *BASE, "--config", "configs/face_latent.py:volume", "--workdir",
            "gs://bucket/run1", "--dry-run", "--", "--config.steps=100"])
  assert r.returncode == 0, r.stderr
  line = r.stdout.strip()
  assert line.startswith("gcloud compute tpus tpu-vm ssh vasa --zone us-east5-a --worker=all --command ")
  assert ("vasa-jax train --config configs/face_latent.py:volume --workdir gs://bucket/run1 "
          "--config.steps=100") in line
  assert "VASA_DISTRIBUTED=auto" in line
  for cmd, want in (("logs", "--worker=0"), ("stop", "pkill -TERM"), ("delete", "tpu-vm delete vasa")):
    r = _run([TPU, cmd, *BASE, "--dry-run"])
    assert r.returncode == 0 and want in r.stdout, (cmd, r.stdout, r.stderr)


@pytest.mark.parametrize("args,msg", [
    ([], "missing sub-command"),
    (["launch"], "unknown sub-command 'launch'"),
    (["create", "--zone", "z"], "--name is required"),
    (["create", "--name", "v"], "--zone is required"),
    (["train", *BASE, "--workdir", "w"], "--config is required"),
    (["create", *BASE, "--bogus"], "unknown option '--bogus'"),
])
def test_tpu_argument_errors(args, msg):
  r = _run([TPU, *args, "--dry-run"] if args else [TPU])
  assert r.returncode != 0
  assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr


# ----------------------------------------------------------------------------- slurm / local

def test_slurm_dry_run():
  r = _run(["launch/slurm_gpu.sbatch"], env={
      "DRY_RUN": "1", "SLURM_JOB_NODELIST": "node[003-005]", "SLURM_NNODES": "3",
      "CONFIG": "configs/motion_dit.py:demo", "WORKDIR": "/shared/runs/s2",
      "EXTRA_ARGS": "--config.steps=10"})
  assert r.returncode == 0, r.stderr
  assert "coordinator: node003:62345  processes: 3" in r.stdout
  srun = r.stdout.strip().splitlines()[-1]
  assert srun.startswith("srun --ntasks-per-node=1 --nodes=3 ")
  assert "VASA_COORDINATOR_ADDRESS=node003:62345,VASA_NUM_PROCESSES=3" in srun
  assert "VASA_PROCESS_ID=$SLURM_PROCID" in srun
  assert ("vasa-jax train --config configs/motion_dit.py:demo --workdir /shared/runs/s2 "
          "--config.steps=10") in srun
  text = open(os.path.join(ROOT, "launch", "slurm_gpu.sbatch")).read()
  for directive in ("--nodes=", "--ntasks-per-node=1", "--gpus-per-node=", "--signal=TERM@120",
                    "--requeue"):
    assert f"#SBATCH {directive}" in text


def test_local_dry_run_and_errors():
  r = _run(["launch/local.sh", "--config", "configs/face_latent.py:volume", "--workdir", "runs/a",
            "--cpu", "--dry-run", "--", "--config.steps=3"])
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == ("VASA_DISTRIBUTED=0 JAX_PLATFORMS=cpu vasa-jax train --config "
                              "configs/face_latent.py:volume --workdir runs/a --config.steps=3")
  r = _run(["launch/local.sh", "--workdir", "runs/a", "--dry-run"])
  assert r.returncode != 0 and "--config is required" in r.stderr


# ----------------------------------------------------------------------------- distributed.plan

@pytest.mark.parametrize("nodelist,hosts", [
    ("node[003-005]", ["node003", "node004", "node005"]),
    ("node[003-004,007],gpu01", ["node003", "node004", "node007", "gpu01"]),
    ("a01,a02", ["a01", "a02"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("single", ["single"]),
])
def test_expand_nodelist(nodelist, hosts):
  assert distributed.expand_nodelist(nodelist) == hosts
  assert distributed.first_host(nodelist) == hosts[0]


def test_plan_from_env():
  assert distributed.plan({})["mode"] == "single"
  assert distributed.plan({"SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                           "SLURM_JOB_NODELIST": "n1"})["mode"] == "single"
  p = distributed.plan({"SLURM_PROCID": "2", "SLURM_NTASKS": "3",
                        "SLURM_STEP_NODELIST": "node[003-005]", "SLURM_JOB_NODELIST": "x[1-9]"})
  assert p == {"mode": "slurm", "coordinator_address": "node003:62345", "num_processes": 3,
               "process_id": 2}
  p = distributed.plan({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "g[7-8]",
                        "VASA_COORDINATOR_PORT": "1234"})
  assert p["coordinator_address"] == "g7:1234"
  p = distributed.plan({"VASA_COORDINATOR_ADDRESS": "10.0.0.1", "VASA_NUM_PROCESSES": "4",
                        "VASA_PROCESS_ID": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "8",
                        "SLURM_JOB_NODELIST": "n[1-8]"})
  assert p == {"mode": "explicit", "coordinator_address": "10.0.0.1:62345", "num_processes": 4,
               "process_id": 3}
  assert distributed.plan({"VASA_COORDINATOR_ADDRESS": "h:99", "VASA_NUM_PROCESSES": "2",
                           "VASA_PROCESS_ID": "0"})["coordinator_address"] == "h:99"
  assert distributed.plan({"VASA_DISTRIBUTED": "auto"})["mode"] == "auto"
  assert distributed.plan({"VASA_DISTRIBUTED": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "4",
                           "SLURM_JOB_NODELIST": "n[1-4]"})["mode"] == "single"
  with pytest.raises(ValueError, match="VASA_PROCESS_ID"):
    distributed.plan({"VASA_COORDINATOR_ADDRESS": "h", "VASA_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="outside"):
    distributed.plan({"VASA_COORDINATOR_ADDRESS": "h", "VASA_NUM_PROCESSES": "2",
                      "VASA_PROCESS_ID": "2"})


def test_initialize_single_process_is_a_no_op(monkeypatch):
  monkeypatch.setattr(distributed, "_DONE", None)
  out = distributed.initialize({})
  assert out["mode"] == "single" and out["initialized"] is False
  assert not distributed.is_initialized()
