"""gRPC's fork handlers stay off in processes that run workers, unless the environment turns them on.

Scripts are forked and exec'd (by uvloop, which calls fork itself); gRPC's handlers, made for fork
without exec, crashed such a child with SIGSEGV while another thread was inside gRPC.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import {module}, os, grpc; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))"


def _fork_setting(module: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("module", ["sx.worker", "sx.cli"])
def test_importing_the_worker_or_the_cli_turns_grpc_fork_handlers_off(module: str) -> None:
    assert _fork_setting(module) == "false"


@pytest.mark.parametrize("module", ["sx.worker", "sx.cli"])
def test_a_setting_from_the_environment_is_kept(module: str) -> None:
    assert _fork_setting(module, GRPC_ENABLE_FORK_SUPPORT="true") == "true"
