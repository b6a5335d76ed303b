"""Point the "Open in Colab" badges (README and notebook) and the notebook's REPO_URL default at one GitHub repository.

    python scripts/colab_link.py                                   # the repository git's `origin` names
    python scripts/colab_link.py https://github.com/OWNER/fashion_trainer.git

Run it once in a fork (and commit) so that the link opens your notebook and Run all clones your code.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/([^/\s)]+)/colab_runner\.ipynb")
REPO_URL = re.compile(r'^REPO_URL = "([^"]*)"', re.MULTILINE)


def github_repository(url: str) -> str:
    """OWNER/NAME of a GitHub clone URL (https or ssh)."""
    found = re.fullmatch(r"(?:https://github\.com/|git@github\.com:)([^/\s]+/[^/\s]+?)(?:\.git)?/?", url.strip())
    if not found:
        raise SystemExit(f"error: {url!r} is not a GitHub repository URL (https://github.com/OWNER/NAME.git)")
    return found.group(1)


def set_repository(root: Path, url: str, branch: str = "main") -> str:
    """Rewrite the README link and the notebook's REPO_URL in `root` for `url`; returns OWNER/NAME."""
    repository = github_repository(url)
    link = f"https://colab.research.google.com/github/{repository}/blob/{branch}/colab_runner.ipynb"
    readme = root / "README.md"
    text, links = LINK.subn(link, readme.read_text())
    if not links:
        raise SystemExit("error: README.md has no Open in Colab link to rewrite")
    readme.write_text(text)
    notebook = nbformat.read(root / "colab_runner.ipynb", as_version=4)
    notebook.cells[0].source = LINK.sub(link, notebook.cells[0].source)  # its own badge
    cell = notebook.cells[1]
    cell.source = REPO_URL.sub(f'REPO_URL = "https://github.com/{repository}.git"', cell.source, count=1)
    nbformat.write(notebook, root / "colab_runner.ipynb")
    return repository


if __name__ == "__main__":
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True).stdout
    )
    print("README link and notebook REPO_URL now point at", set_repository(ROOT, url or "(git has no origin remote)"))
