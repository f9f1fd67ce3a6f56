"""The configuration the README shows operators parses as it is written."""
import re
from pathlib import Path

from appliance.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_toml_block_of_the_readme_parses():
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        parse_config(block, "README.md")
