"""The project's subunit2sql schema, created on MariaDB, matches the DDL column for column."""

import re

import pytest

DDL_FILE = "subunit2sql/schema-mysql.reconstructed.sql"

_TYPES = {"INT": "INTEGER"}


def parse_ddl(text):
    """``{table: {"columns": [(name, type, nullable, auto)], "pk": [...],
    "unique": {name: [cols]}, "keys": {name: [(col, prefix)]}}}`` from MySQL DDL."""
    text = re.sub(r"--[^\n]*", "", text)
    tables = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\)\s*(?:ENGINE=\w+)?;", text, re.S):
        table = {"columns": [], "pk": [], "unique": {}, "keys": {}}
        for line in (part.strip() for part in body.splitlines()):
            line = line.rstrip(",").strip()
            if not line:
                continue
            if line.startswith("PRIMARY KEY"):
                table["pk"] = re.findall(r"`?(\w+)`?", line[len("PRIMARY KEY"):])
                continue
            m = re.match(r"(UNIQUE )?KEY (\w+) \((.*)\)$", line)
            if m:
                cols = [(c, int(p) if p else None) for c, p in
                        re.findall(r"`?(\w+)`?(?:\((\d+)\))?", m.group(3))]
                if m.group(1):
                    table["unique"][m.group(2)] = [c for c, _ in cols]
                else:
                    table["keys"][m.group(2)] = cols
                continue
            m = re.match(r"`?(\w+)`?\s+(\w+(?:\(\d+\))?)\s+(NOT NULL|NULL)(.*)$", line)
            assert m, f"unparsed DDL line: {line!r}"
            col, typ, null, rest = m.groups()
            base = typ.split("(")[0]
            typ = typ.replace(base, _TYPES.get(base, base))
            table["columns"].append((col, typ, null == "NULL", "AUTO_INCREMENT" in rest))
        tables[name] = table
    return tables


def _type(compiled):
    """A reflected type without MySQL's integer display width (BIGINT(20))."""
    return re.sub(r"^(BIGINT|INTEGER|SMALLINT|TINYINT)\(\d+\)$", r"\1", compiled)


@pytest.fixture(scope="module")
def ddl(sample_data):
    return parse_ddl((sample_data / DDL_FILE).read_text())


def test_ddl_parses_every_table(ddl):
    assert set(ddl) == {"tests", "runs", "test_runs", "run_metadata", "test_run_metadata",
                        "test_metadata", "attachments", "alembic_version"}
    assert ddl["runs"]["columns"][0][0] == "uuid"


def test_schema_objects_match_ddl(ddl):
    from ciml_plugins.sources import subunit2sql_schema as schema

    for name, spec in ddl.items():
        table = schema.metadata.tables[name]
        assert [c.name for c in table.columns] == [c[0] for c in spec["columns"]], name


def test_created_on_mariadb_matches_ddl_column_for_column(ddl, s2s_mariadb):
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = sa.create_engine(s2s_mariadb)
    schema.create_schema(engine)
    schema.create_schema(engine)  # idempotent on an existing database
    insp = sa.inspect(engine)
    assert set(insp.get_table_names()) == set(ddl)
    for name, spec in ddl.items():
        cols = insp.get_columns(name)
        got = [(c["name"], _type(c["type"].compile(dialect=engine.dialect)), c["nullable"],
                bool(c.get("autoincrement")) and c["name"] in spec["pk"]) for c in cols]
        assert got == spec["columns"], name
        assert insp.get_pk_constraint(name)["constrained_columns"] == spec["pk"], name
        assert insp.get_foreign_keys(name) == [], name
        indexes = insp.get_indexes(name)
        unique = {i["name"]: i["column_names"] for i in indexes if i["unique"]}
        unique.update({u["name"]: u["column_names"]
                       for u in insp.get_unique_constraints(name)})
        assert unique == spec["unique"], name
        keys = {}
        for index in indexes:
            if index["unique"]:
                continue
            lengths = index.get("dialect_options", {}).get("mysql_length") or {}
            if not isinstance(lengths, dict):
                lengths = {index["column_names"][0]: lengths}
            keys[index["name"]] = [(c, lengths.get(c)) for c in index["column_names"]]
        assert keys == spec["keys"], name
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() \
            == schema.ALEMBIC_HEAD
        engines = dict(conn.exec_driver_sql(
            "SELECT table_name, engine FROM information_schema.tables "
            "WHERE table_schema = DATABASE()").fetchall())
    assert all(engines[t] == "InnoDB" for t in ddl if t != "alembic_version")
    engine.dispose()


def test_created_on_sqlite_has_the_same_columns(ddl, tmp_path):
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = sa.create_engine(f"sqlite:///{tmp_path / 's.db'}")
    schema.create_schema(engine)
    insp = sa.inspect(engine)
    for name, spec in ddl.items():
        cols = insp.get_columns(name)
        assert [(c["name"], c["nullable"]) for c in cols] == [
            (c[0], c[2]) for c in spec["columns"]], name
        # SQLite auto-increments only INTEGER PRIMARY KEY.
        types = {c["name"]: str(c["type"]) for c in cols}
        if "id" in types:
            assert types["id"] == "INTEGER"
    engine.dispose()
