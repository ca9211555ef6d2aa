"""``ragtide tenants``: tenant files validated (file, line, field), then reconciled."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ragtide.admin import FileError, apply_tenants, cmd_tenants, load_tenant_files
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.settings import Settings
from ragtide.tenant_config import TenantConfig

INSTALLED = {"hybrid", "openai", "groups", "acme-search"}


def load(
    directory: Path, allowed: list[str] | None = None
) -> tuple[list[tuple[Path, TenantConfig]], list[FileError]]:
    return load_tenant_files(directory, installed=INSTALLED.__contains__, allowed=allowed)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- load_tenant_files -------------------------------------------------------------------


def test_good_files_of_every_suffix_under_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", "id: acme\nname: Acme\nretrieval: {top_k: 4}\n")
    write(tmp_path, "sub/beta.yml", "id: beta\nretriever: {use: acme-search}\n")
    write(tmp_path, "gamma.json", json.dumps({"id": "gamma", "quotas": {"documents": 9}}))
    write(tmp_path, "notes.txt", "id: NOT A TENANT")
    write(tmp_path, "README.md", "# nothing")
    good, errors = load(tmp_path)
    assert errors == []
    assert [(p.relative_to(tmp_path).as_posix(), c.id) for p, c in good] == [
        ("acme.yaml", "acme"),
        ("gamma.json", "gamma"),
        ("sub/beta.yml", "beta"),
    ]
    acme = good[0][1]
    assert acme.name == "Acme" and acme.retrieval.top_k == 4


def test_not_a_directory(tmp_path: Path) -> None:
    good, [error] = load(tmp_path / "missing")
    assert good == [] and error.message == "not a directory"
    assert str(error) == f"{tmp_path / 'missing'}: not a directory"


def test_a_nested_bad_field_names_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme.yaml",
        "id: acme\n"  # 1
        "name: Acme\n"  # 2
        "quotas:\n"  # 3
        "  documents: 10\n"  # 4
        "  search_per_second: -1\n"  # 5
        "retrieval:\n"  # 6
        "  top_k: 5\n",  # 7
    )
    good, [error] = load(tmp_path)
    assert good == []
    assert (error.path, error.line, error.field) == (path, 5, "quotas.search_per_second")
    assert "greater than or equal to 0" in error.message
    assert str(error).startswith(f"{path}:5: quotas.search_per_second: ")


def test_an_unknown_field_names_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "acme.yaml",
        "id: acme\n"  # 1
        "retrieval:\n"  # 2
        "  top_k: 5\n"  # 3
        "  topk: 6\n"  # 4
        "colour: red\n",  # 5
    )
    _, errors = load(tmp_path)
    assert sorted((e.line, e.field) for e in errors) == [(4, "retrieval.topk"), (5, "colour")]
    assert all("Extra inputs are not permitted" in e.message for e in errors)


def test_a_bad_list_item_names_its_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "acme.yaml",
        "id: acme\n"  # 1
        "policies:\n"  # 2
        "  - use: groups\n"  # 3
        "  - config: {field: x}\n",  # 4
    )
    _, [error] = load(tmp_path)
    assert (error.line, error.field) == (4, "policies.1.use")
    assert error.message == "Field required"


def test_a_missing_id_and_a_bad_id(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: nobody\n")
    write(tmp_path, "b.yaml", "\n\nid: Not_A_Label\n")
    _, errors = load(tmp_path)
    assert [(e.path.name, e.line, e.field) for e in errors] == [
        ("a.yaml", 1, "id"),
        ("b.yaml", 3, "id"),
    ]
    assert errors[0].message == "Field required"
    assert "invalid tenant id" in errors[1].message


def test_a_json_file_names_its_line(tmp_path: Path) -> None:
    write(tmp_path, "acme.json", '{\n  "id": "acme",\n  "retrieval": {"top_k": 0}\n}\n')
    _, [error] = load(tmp_path)
    assert (error.line, error.field) == (3, "retrieval.top_k")


def test_a_plain_secret_is_an_error_without_its_value(tmp_path: Path) -> None:
    write(
        tmp_path,
        "acme.yaml",
        "id: acme\nchat_model:\n  use: openai\n  config:\n    api_key: sk-plain-123\n",
    )
    _, [error] = load(tmp_path)
    assert error.field == "chat_model"
    assert "config.api_key looks like a secret" in error.message
    assert "sk-plain-123" not in str(error)


def test_a_plain_secret_error_names_the_fields_or_the_secrets_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "acme.yaml",
        "id: acme\n"  # 1
        "name: Acme\n"  # 2
        "chat_model:\n"  # 3
        "  use: openai\n"  # 4
        "  config:\n"  # 5
        "    api_key: sk-plain\n",  # 6
    )
    _, [error] = load(tmp_path)
    assert error.line in (3, 6)


@pytest.mark.parametrize(
    "text, line",
    [
        ("id: acme\nname: [unclosed\n", 3),
        ("id: acme\nname: a\n  bad: indent\n", 3),
        ("id: acme\n\n\nquotas: {documents: 1\n", 5),
        ("id: a\n---\nid: b\n", 2),
    ],
)
def test_invalid_yaml_reports_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, "acme.yaml", text)
    good, [error] = load(tmp_path)
    assert good == []
    assert (error.path, error.line, error.field) == (path, line, "")
    assert error.message.startswith("not valid YAML/JSON")


@pytest.mark.parametrize("text", ["", "- id: acme\n", "just text\n", "42\n"])
def test_a_file_must_hold_one_mapping(tmp_path: Path, text: str) -> None:
    write(tmp_path, "acme.yaml", text)
    _, [error] = load(tmp_path)
    assert (error.line, error.message) == (1, "a tenant file holds one mapping")


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "id: acme\n")
    write(tmp_path, "b/c.yaml", "name: again\nid: acme\n")
    write(tmp_path, "d.yaml", "id: other\n")
    _, [error] = load(tmp_path)
    assert (error.path.name, error.line, error.field) == ("c.yaml", 2, "id")
    assert error.message == f"also defined in {first}"


def test_plugins_must_be_installed_and_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "acme.yaml",
        "id: acme\nretriever: {use: nope}\nchat_model: {use: openai}\npolicies: [{use: groups}]\n",
    )
    _, errors = load(tmp_path)
    assert [(e.field, e.message) for e in errors] == [
        ("retriever.use", "no installed plugin named 'nope'")
    ]
    _, errors = load(tmp_path, allowed=["groups", "nope"])
    assert [(e.field, e.line, e.message) for e in errors] == [
        ("retriever.use", 2, "no installed plugin named 'nope'"),
        ("chat_model.use", 3, "plugin 'openai' is not allowed"),
    ]
    _, errors = load(tmp_path, allowed=[])
    assert [e.field for e in errors] == ["retriever.use", "chat_model.use", "policies.0.use"]


def test_a_plugin_error_names_the_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", "id: acme\nname: Acme\nretriever:\n  use: nope\n")
    _, [error] = load(tmp_path)
    assert (error.line, error.field) == (4, "retriever.use")


def test_configmap_data_directories_are_skipped(tmp_path: Path) -> None:
    # A Kubernetes ConfigMap volume: the files are symlinks into ..data, itself a
    # symlink to a timestamped directory.
    stamped = tmp_path / "..2024_01_02_03_04_05.123"
    write(stamped, "acme.yaml", "id: acme\n")
    write(stamped, "beta.yaml", "id: beta\n")
    os.symlink(stamped.name, tmp_path / "..data")
    for name in ("acme.yaml", "beta.yaml"):
        os.symlink(f"..data/{name}", tmp_path / name)
    good, errors = load(tmp_path)
    assert errors == []  # each tenant once: no duplicate ids from ..data
    assert sorted(c.id for _, c in good) == ["acme", "beta"]
    assert all(".." not in p.relative_to(tmp_path).as_posix() for p, _ in good)


# --- apply_tenants -----------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    await s.start()
    yield s
    await s.aclose()


def tc(tenant: str, **fields: Any) -> TenantConfig:
    return TenantConfig.model_validate({"id": tenant, **fields})


@pytest.mark.anyio
async def test_apply_creates_updates_and_leaves_unchanged(store: SQLiteStore) -> None:
    results = await apply_tenants(store, [tc("acme", name="Acme"), tc("beta")])
    assert results == [("acme", "created"), ("beta", "created")]
    acme = await store.get_tenant("acme")
    assert acme is not None and dict(acme.config) == {"id": "acme", "name": "Acme"}
    results = await apply_tenants(
        store,
        [tc("acme", name="Acme", retrieval={"vector_weight": 0.3}), tc("beta")],
    )
    assert results == [("acme", "updated"), ("beta", "unchanged")]
    acme2 = await store.get_tenant("acme")
    beta = await store.get_tenant("beta")
    assert acme2 is not None and acme2.version == 2
    assert acme2.webhook_secret == acme.webhook_secret  # kept across updates
    assert beta is not None and beta.version == 1
    results = await apply_tenants(
        store, [tc("acme", name="Acme", retrieval={"vector_weight": 0.3})]
    )
    assert results == [("acme", "unchanged")]
    assert (await store.get_tenant("acme")).version == 2  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_apply_prunes_but_never_the_default_tenant(store: SQLiteStore) -> None:
    await store.put_tenant("default", {"id": "default"}, "s")
    await apply_tenants(store, [tc("acme"), tc("beta"), tc("gamma")])
    assert await apply_tenants(store, [tc("beta")]) == [("beta", "unchanged")]
    assert len(await store.list_tenants()) == 4  # no prune: nothing deleted
    results = await apply_tenants(store, [tc("beta")], prune=True)
    assert results == [("beta", "unchanged"), ("acme", "deleted"), ("gamma", "deleted")]
    assert [t.id for t in await store.list_tenants()] == ["beta", "default"]
    assert await apply_tenants(store, [], prune=True) == [("beta", "deleted")]
    assert [t.id for t in await store.list_tenants()] == ["default"]


# --- cmd_tenants -------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    yield Settings(data_dir=tmp_path / "data")


def stored(settings: Settings) -> list[str]:
    async def ids() -> list[str]:
        s = SQLiteStore(SQLiteStore.Config(), data_dir=settings.data_dir)
        await s.start()
        try:
            return [t.id for t in await s.list_tenants()]
        finally:
            await s.aclose()

    return asyncio.run(ids())


def test_a_bad_file_means_nothing_is_applied(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "tenants"
    write(files, "acme.yaml", "id: acme\nretriever: {use: hybrid}\n")
    bad = write(files, "beta.yaml", "id: beta\nquotas:\n  documents: -5\n")
    assert cmd_tenants(settings, "apply", files, prune=False) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"ragtide: {bad}:3: quotas.documents: " in err
    assert "1 error(s); nothing was changed" in err
    assert stored(settings) == []


def test_apply_then_list_through_the_command(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "tenants"
    write(files, "acme.yaml", "id: acme\nretriever: {use: hybrid}\npolicies: [{use: groups}]\n")
    write(files, "beta.json", '{"id": "beta"}')
    assert cmd_tenants(settings, "apply", files, prune=False) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"tenant": "acme", "outcome": "created"},
        {"tenant": "beta", "outcome": "created"},
    ]
    (files / "beta.json").unlink()
    assert cmd_tenants(settings, "apply", files, prune=True) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"tenant": "acme", "outcome": "unchanged"},
        {"tenant": "beta", "outcome": "deleted"},
    ]
    assert cmd_tenants(settings, "list", None, prune=False) == 0
    out, _ = capsys.readouterr()
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["id"] == "acme" and row["version"] == 1
    assert row["config"]["policies"] == [{"use": "groups"}]  # defaults are not stored


def test_an_uninstalled_plugin_changes_nothing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "tenants"
    write(files, "acme.yaml", "id: acme\nretriever: {use: not-installed-anywhere}\n")
    assert cmd_tenants(settings, "apply", files, prune=False) == 1
    assert "no installed plugin named 'not-installed-anywhere'" in capsys.readouterr().err
    assert stored(settings) == []


def test_apply_needs_a_directory(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_tenants(settings, "apply", None, prune=False) == 2
    assert "needs -f DIR" in capsys.readouterr().err
