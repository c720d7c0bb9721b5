"""The wheel a user installs carries the templates and the `enova` console script, and the
installed package renders a launch from the templates inside it (not the source tree's)."""

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.one_core]


def test_the_wheel_ships_templates_and_the_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True)
    [wheel] = tmp_path.glob("enova-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("vllm/argv.yaml.j2", "vllm/env.yaml.j2", "vllm/defaults.yaml", "inject/report.html.j2"):
        assert f"enova/templates/{template}" in names
    assert "enova/inject/data/prompts.jsonl" in names  # the shipped prompt set: a run needs no download
    # The pages work offline: every file they load is in the wheel, none comes from a CDN.
    for asset in ("app/static/instance.html", "app/static/instance.js", "app/static/charts.js",
                  "app/static/instance.css", "webui/static/index.html", "webui/static/app.js",
                  "webui/static/style.css", "monitor/grafana/enova.json"):
        assert f"enova/{asset}" in names, asset
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "enova = enova.cli:main" in entry_points

    # Installed into a bare environment (dependencies borrowed from ours), it uses its own templates.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    zipfile.ZipFile(wheel).extractall(site)
    ours = subprocess.run([sys.executable, "-c", "import pydantic, os; print(os.path.dirname(os.path.dirname(pydantic.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(ours + "\n")
    code = ("import enova.engines.templates as t; print(t.templates_dir()); "
            "from enova.engines.vllm import render_launch; "
            "c={'model':'m','runtime':'local','engine':{'name':'vllm','args':{},'env':{}},'resources':{'gpus':0,'cpus':1}}; "
            "print(render_launch(deployment='d', replica_id='r', config=c, config_hash='h', model_path='/m', "
            "offline=True, host='127.0.0.1', port=1, cpus=[0], gpus=[]).argv[6:9])")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(site)
    assert "vllm.entrypoints.openai.api_server" in out.stdout
