"""Build hook: the bundled default model lives at the repository's top-level weights/ and is copied into the package
(tinyhpd/_bundled/<name>/) when a wheel or a non-editable install is built, so every install resolves the same default.
An editable install finds it in the checkout's weights/ instead (see tinyhpd/hub.py)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ("tinyhpd-minilm-l4-h128",)  # folders of weights/ that ship in the wheel


class build_py_with_weights(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable: tinyhpd/hub.py reads the checkout's weights/
        root = Path(self.build_lib) / "tinyhpd" / "_bundled"
        if root.exists():  # a reused build/ may hold an earlier default: the wheel ships exactly BUNDLED
            shutil.rmtree(root)
        for name in BUNDLED:
            src = HERE / "weights" / name
            if not (src / "modules.json").is_file():
                raise SystemExit(f"weights/{name} is missing: the wheel would ship without its default model")
            shutil.copytree(src, root / name)


setup(cmdclass={"build_py": build_py_with_weights})
