"""The GitOps repository as a real Git remote: a bare repository with server-side hooks.

`sluice up` creates `<state_dir>/gitops.git` on first start, seeded with this project's files (its
desired state under gitops/, its workflows, its code: a clone is what a fork on GitHub would be), and
keeps it on later starts. Its hooks make it behave like a forge with a required check and CI:

- pre-receive runs `sluice ci check` on what is pushed (pipelines/ci/check.py) and refuses the push,
  printing why, when it fails; it also refuses deleting or rewriting the main branch. Nothing is
  written when a push is refused.
- post-receive queues a job for the local CI runner (runner.py) and returns at once; the push never
  waits for CI. Commits pushed by the CI bot queue nothing (as on GitHub, where a workflow's own
  pushes trigger no workflow).

The hooks run this project's interpreter with the platform's settings (`<state_dir>/ci/hook.env`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.config import REPO_ROOT, Settings, load_settings
from pipelines.gitops import git
from pipelines.platform.processes import Echo, PlatformError

ZERO = git.ZERO_SHA
HOOKS = ("pre-receive", "post-receive")
SEED_NAME, SEED_EMAIL = "sluice", "sluice@localhost"


def hook_env_file(settings: Settings) -> Path:
    return settings.state_dir / "ci" / "hook.env"


def settings_env(settings: Settings) -> dict[str, str]:
    """The env that reproduces `settings` in another process (hooks, the runner, the stand-in)."""
    env = {
        "SLUICE_STATE_DIR": str(settings.state_dir),
        "SLUICE_S3_HOST": settings.s3_host,
        "SLUICE_S3_PORT": str(settings.s3_port),
        "SLUICE_S3_ENDPOINT_OVERRIDE": "1" if settings.s3_endpoint_override else "0",
        "SLUICE_MLFLOW_HOST": settings.mlflow_host,
        "SLUICE_MLFLOW_PORT": str(settings.mlflow_port),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "SLUICE_MODELS_BUCKET": settings.models_bucket,
        "SLUICE_DATA_BUCKET": settings.data_bucket,
        "AWS_DEFAULT_REGION": settings.aws_region,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
        "SLUICE_MODEL_NAME": settings.model_name,
        "SLUICE_GITOPS_REMOTE": settings.gitops_url,
        "SLUICE_GITOPS_BRANCH": settings.gitops_branch,
        "SLUICE_PROMETHEUS_HOST": settings.prometheus_host,
        "SLUICE_PROMETHEUS_PORT": str(settings.prometheus_port),
        "SLUICE_SCRAPE_INTERVAL": f"{settings.scrape_interval:g}",
        "SLUICE_SERVE_HOST": settings.serve_host,
        "SLUICE_SERVE_PORT": str(settings.serve_port),
        "SLUICE_CI_TICK": f"{settings.ci_tick:g}",
        "SLUICE_CI_SYNC_TICK": f"{settings.ci_sync_tick:g}",
        "SLUICE_CI_BOT_NAMES": ",".join(settings.ci_bot_names),
        "SLUICE_POLL_INTERVAL": f"{settings.poll_interval:g}",
        "SLUICE_STANDIN": "1" if settings.standin else "0",
        "SLUICE_INFERENCE_LOG_HOST": settings.inference_log_host,
        "SLUICE_INFERENCE_LOG_PORT": str(settings.inference_log_port),
        "SLUICE_CONSOLE_HOST": settings.console_host,
        "SLUICE_CONSOLE_PORT": str(settings.console_port),
    }
    optional = {
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_explicit,
        "PROMETHEUS_URL": settings.prometheus_url,
        "SLUICE_PROMETHEUS_BIN": settings.prometheus_bin,
        "ROSSMANN_DATA_DIR": str(settings.data_dir) if settings.data_dir else "",
    }
    env.update({k: v for k, v in optional.items() if v})
    return env


def load_hook_settings() -> Settings:
    """Settings of the platform that installed the hook (its env file), else the process env."""
    path = os.environ.get("SLUICE_HOOK_ENV")
    if path and Path(path).is_file():
        return load_settings({**os.environ, **json.loads(Path(path).read_text())})
    return load_settings()


def _project_files(root: Path) -> list[str]:
    """The project's files as a clone would have them: tracked, plus new files not ignored."""
    out = git.git(root, "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def seed(remote: Path, branch: str, source: Path = REPO_ROOT) -> str:
    """Create the bare repository with one commit holding the project's files; returns its sha."""
    remote.parent.mkdir(parents=True, exist_ok=True)
    git.git(remote.parent, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(remote))
    with tempfile.TemporaryDirectory(prefix="sluice-seed-") as tmp:
        work = Path(tmp) / "work"
        git.git(Path(tmp), "init", "--quiet", f"--initial-branch={branch}", str(work))
        for rel in _project_files(source):
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, target)
        git.git(work, "add", "--all")
        origin = git.resolve(source, "HEAD") if (source / ".git").exists() else None
        env_id = {"GIT_AUTHOR_NAME": SEED_NAME, "GIT_AUTHOR_EMAIL": SEED_EMAIL}
        message = "Seed the GitOps repository with the project" + (f" at {origin[:12]}" if origin else "")
        subprocess.run(
            [
                "git",
                "-c",
                f"user.name={SEED_NAME}",
                "-c",
                f"user.email={SEED_EMAIL}",
                "commit",
                "--quiet",
                "-m",
                message,
            ],
            cwd=work,
            check=True,
            env={**os.environ, **env_id},
            capture_output=True,
        )
        git.git(work, "push", "--quiet", str(remote), f"HEAD:refs/heads/{branch}")
        return git.head(work)


def install_hooks(settings: Settings, remote: Path) -> None:
    env_file = hook_env_file(settings)
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(json.dumps(settings_env(settings), indent=1))
    os.chmod(env_file, 0o600)
    for name in HOOKS:
        path = remote / "hooks" / name
        path.write_text(
            "#!/bin/sh\n"
            f"# Installed by `sluice up`: {name} of the Sluice GitOps remote (pipelines/platform/gitserver.py).\n"
            f"SLUICE_HOOK_ENV={shlex.quote(str(env_file))} exec {shlex.quote(sys.executable)} "
            f"-m pipelines.platform.hooks {name}\n"
        )
        path.chmod(0o755)
    # A forge keeps history: no force pushes or deletions of what others have pulled.
    git.git(remote, "config", "receive.denyNonFastForwards", "true")
    git.git(remote, "config", "receive.denyDeletes", "true")


def ensure_remote(settings: Settings, echo: Echo = print) -> Path | None:
    """The local GitOps remote, created and seeded on first start; None when the remote is elsewhere."""
    remote = settings.gitops_remote_path
    if remote is None:
        echo(f"git: the GitOps remote is {settings.gitops_url} (its own CI runs the workflows)")
        return None
    if not (remote / "HEAD").is_file():
        if remote.exists() and any(remote.iterdir()):
            raise PlatformError(f"{remote} exists but is not a git repository; move it away and run `sluice up` again")
        sha = seed(remote, settings.gitops_branch)
        echo(f"git: created the GitOps remote {remote} (seeded with this project at {sha[:12]})")
    else:
        head = git.resolve(remote, settings.gitops_branch)
        echo(f"git: GitOps remote {remote} ({settings.gitops_branch} at {head[:12] if head else 'no commits'})")
    install_hooks(settings, remote)
    return remote


def clone_command(settings: Settings) -> str:
    return f"git clone {settings.gitops_url} gitops-work"
