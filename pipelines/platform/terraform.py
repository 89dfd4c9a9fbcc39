"""`terraform/storage` applied against the embedded S3, with the aws provider from a filesystem
mirror when the registry is out of reach."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipelines.config import REPO_ROOT, Settings
from pipelines.platform.processes import Echo, PlatformError, run

STORAGE_STACK = REPO_ROOT / "terraform" / "storage"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"


def find_tf_mirror() -> Path | None:
    """Directory holding registry.terraform.io/hashicorp/aws: $SLUICE_TF_MIRROR, else a search."""
    env = os.environ.get("SLUICE_TF_MIRROR")
    if env:
        return Path(env)
    candidates = [
        Path("/opt/tf-plugins"),
        Path.home() / ".terraform.d" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    for c in candidates:
        if (c / AWS_PROVIDER).is_dir():
            return c
    # Same as `find / -maxdepth 4 -name registry.terraform.io`, without walking the whole disk.
    for pattern in ("*/registry.terraform.io", "*/*/registry.terraform.io", "*/*/*/registry.terraform.io"):
        for hit in Path("/").glob(pattern):
            if (hit / "hashicorp" / "aws").is_dir():
                return hit.parent
    return None


def write_terraform_cli_config(settings: Settings) -> Path:
    """A CLI config that takes the aws provider from the mirror (the registry may be out of reach)."""
    path = settings.state_dir / "terraform" / "terraformrc"
    path.parent.mkdir(parents=True, exist_ok=True)
    mirror = find_tf_mirror()
    if mirror is None:
        # No mirror: plain registry installation, as on any machine with internet access.
        text = "# no filesystem mirror found: providers come from the registry\n"
    else:
        text = (
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {json.dumps(str(mirror))}\n"
            f'    include = ["{AWS_PROVIDER}"]\n'
            "  }\n"
            "  direct {\n"
            f'    exclude = ["{AWS_PROVIDER}"]\n'
            "  }\n"
            "}\n"
        )
    path.write_text(text)
    return path


def terraform_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **settings.aws_env(),
        "TF_CLI_CONFIG_FILE": str(write_terraform_cli_config(settings)),
        # .terraform/ (providers, backend config) goes to the state dir, not into the repository.
        "TF_DATA_DIR": str(settings.state_dir / "terraform" / "storage-data"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }


def terraform_vars(settings: Settings) -> list[str]:
    values = {
        "region": settings.aws_region,
        "s3_endpoint": settings.s3_endpoint_url or "",
        "models_bucket": settings.models_bucket,
        "data_bucket": settings.data_bucket,
    }
    return [arg for k, v in values.items() for arg in ("-var", f"{k}={v}")]


def terraform_binary() -> str:
    tf = shutil.which("terraform")
    if tf is None:
        raise PlatformError("`terraform` is not on PATH; install Terraform >= 1.5 and retry.")
    return tf


def apply_storage(settings: Settings, echo: Echo = print) -> dict[str, str]:
    """`terraform init` + `apply` of terraform/storage; returns its outputs (bucket names)."""
    tf = terraform_binary()
    env = terraform_env(settings)
    state = settings.state_dir / "terraform" / "storage.tfstate"
    chdir = f"-chdir={STORAGE_STACK}"
    echo(f"terraform: init {STORAGE_STACK.relative_to(REPO_ROOT)} (state {state})")
    run(
        [tf, chdir, "init", "-input=false", "-no-color", f"-backend-config=path={state}", "-reconfigure"],
        what="terraform init",
        env=env,
    )
    echo(f"terraform: apply (s3 endpoint {settings.s3_endpoint_url or 'AWS'})")
    out = run(
        [tf, chdir, "apply", "-auto-approve", "-input=false", "-no-color", *terraform_vars(settings)],
        what="terraform apply",
        env=env,
    )
    summary = next((ln for ln in out.splitlines() if ln.startswith(("Apply complete", "No changes"))), "")
    echo(f"terraform: {summary or 'applied'}")
    raw = json.loads(run([tf, chdir, "output", "-json", "-no-color"], what="terraform output", env=env))
    return {k: str(v["value"]) for k, v in raw.items()}
