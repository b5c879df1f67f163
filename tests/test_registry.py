"""Registry: decorator and entry-point registration, lazy listing, duplicates, unknown names."""

import subprocess
import sys
import textwrap

import pytest

from lrc.registry import COMPRESSORS, REGISTRIES, SAMPLERS, PluginError, Registry


def test_builtins_are_listed_per_kind():
    assert "tome" in COMPRESSORS.names()
    assert "uniform" in SAMPLERS.names()
    assert set(REGISTRIES) == {"encoders", "compressors", "projectors", "llms", "heads", "samplers", "prompts",
                               "loggers", "callbacks", "optimizers"}


def test_listing_does_not_import_plugins():
    code = ("import sys; from lrc.registry import REGISTRIES; "
            "[r.names() for r in REGISTRIES.values()]; "
            "print(sorted(m for m in sys.modules if m.startswith('lrc_plugins.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_get_loads_through_entry_point_and_matches_decorator():
    cls = COMPRESSORS.get("tome")
    assert cls.__name__ == "ToMeCompressor"
    assert COMPRESSORS.origin_of("tome") == "lrc_plugins.compressors.tome:ToMeCompressor"


def test_unknown_name_suggests_close_matches_and_lists_known():
    with pytest.raises(PluginError) as err:
        COMPRESSORS.get("tomee")
    msg = str(err.value)
    assert "'tome'" in msg and "Did you mean" in msg and "Known:" in msg


def test_duplicate_decorator_names_both_origins():
    reg = Registry("widgets")

    @reg.register("thing")
    class A:  # noqa: D401
        pass

    with pytest.raises(PluginError) as err:
        @reg.register("thing")
        class B:
            pass
    assert "A" in str(err.value) and "B" in str(err.value)


def test_registered_names_must_be_snake_case():
    with pytest.raises(ValueError):
        Registry("widgets").register("NotSnake")


def _install_fake_distribution(tmp_path, monkeypatch, dist, module, group, entries):
    """A real (if minimal) installed distribution: importlib.metadata finds it on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        class Gadget:
            def __init__(self, size: int = 1):
                self.size = size
        class Other:
            pass
    """))
    info = tmp_path / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{n} = {v}" for n, v in entries)
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_third_party_entry_point_registers_without_touching_lrc(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch, "lrc_thirdparty", "lrc_thirdparty_mod",
                               "lrc.gizmos", [("gadget", "lrc_thirdparty_mod:Gadget")])
    reg = Registry("gizmos")
    assert reg.names() == ["gadget"]
    assert reg.get("gadget")(size=3).size == 3


def test_conflicting_entry_points_name_both(tmp_path, monkeypatch):
    for sub, dist, mod, target in (("a", "pkg_a", "mod_a", "Gadget"), ("b", "pkg_b", "mod_b", "Other")):
        (tmp_path / sub).mkdir()
        _install_fake_distribution(tmp_path / sub, monkeypatch, dist, mod, "lrc.gizmos2",
                                   [("gadget", f"{mod}:{target}")])
    with pytest.raises(PluginError) as err:
        Registry("gizmos2").names()
    assert "mod_a:Gadget" in str(err.value) and "mod_b:Other" in str(err.value)


def test_broken_entry_point_says_which_plugin(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch, "pkg_c", "mod_c", "lrc.gizmos3",
                               [("broken", "mod_c:DoesNotExist")])
    with pytest.raises(PluginError) as err:
        Registry("gizmos3").get("broken")
    assert "broken" in str(err.value) and "pkg_c" in str(err.value)


def test_cli_plugins_list_json():
    out = subprocess.run([sys.executable, "-m", "lrc.cli", "plugins", "list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    import json

    listing = json.loads(out)
    assert "tome" in listing["compressors"] and "uniform" in listing["samplers"]
    assert set(listing) == set(REGISTRIES)
