"""``import specexec`` loads no httpx: the HTTP backends (and httpx) load when first named.

In fresh interpreters, so nothing the test process imported counts.
"""

from __future__ import annotations

from ._subprocess import run_fresh

SCRIPT = """
import json, sys
import specexec
from specexec.backends import HttpConfig, HttpTimeouts
config = specexec.config.RuntimeConfig  # the TOML config reads HttpConfig without httpx
out = {"after_import": sorted(m for m in ("httpx", "httpcore", "trio") if m in sys.modules)}
out["listed"] = sorted(set(specexec.backends.__all__) - set(dir(specexec.backends)))
from specexec.backends import OpenAICompatible
out["after_backend"] = sorted(m for m in ("httpx", "httpcore") if m in sys.modules)
out["same"] = specexec.backends.OpenAICompatible is OpenAICompatible and OpenAICompatible.__module__
print(json.dumps(out))
"""


def test_import_specexec_loads_no_httpx_until_an_http_backend_is_named() -> None:
    assert run_fresh(SCRIPT) == {
        "after_import": [],
        "listed": [],
        "after_backend": ["httpcore", "httpx"],
        "same": "specexec.backends._openai",
    }


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    script = (
        "import json, specexec.backends as b\n"
        "try:\n    b.Nope\nexcept AttributeError as e:\n    print(json.dumps(str(e)))"
    )
    assert run_fresh(script) == "module 'specexec.backends' has no attribute 'Nope'"
