"""Statements run on the driver's own cursor, for the store's hottest per-row writes.

SQLAlchemy's execution of a compiled statement costs some 80 µs of Python per call (parameters,
execution context, result object); the same UPDATE on the driver's cursor costs 5. A
``DirectStatement`` is compiled once per dialect and keeps what SQLAlchemy would do per call: its
parameters' type processing (a datetime becomes SQLite's text, for instance) and its result columns'
(back to an aware datetime). It runs on the connection's DBAPI cursor inside the caller's transaction;
on the asynchronous drivers, SQLAlchemy's adapted cursor (``run_sync`` provides the context it needs).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["DirectStatement", "compiled_once", "direct_select"]

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class DirectStatement:
    """``statement`` compiled for one dialect: its SQL with positional parameters, how each parameter
    and result column is processed, and the named tuple its rows come as (attribute access by column
    name, as ``sa.Row``)."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[_Processor, ...]
    fixed: Mapping[str, Any]
    """Values the statement carries itself (a literal in a function call), by bind name."""
    results: tuple[_Processor, ...]
    row: Callable[..., Any]

    @classmethod
    def compile(
        cls, statement: sa.ClauseElement, dialect: Dialect, returning: Iterable[sa.ColumnClause[Any]] = ()
    ) -> DirectStatement:
        """``returning``: the columns the statement's rows hold, in order (its RETURNING clause)."""
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # DML and SELECT compile with the SQL compiler
        if compiled.positiontup is None:
            raise RuntimeError(f"the {dialect.name} driver takes named parameters: no direct statements")
        names = tuple(compiled.positiontup)
        fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        binds = tuple(_typed(compiled.binds[name].type, dialect).bind_processor(dialect) for name in names)
        returning = list(returning)
        results = tuple(_typed(column.type, dialect).result_processor(dialect, None) for column in returning)
        row = namedtuple("DirectRow", [column.name for column in returning])._make  # type: ignore[attr-defined]
        return cls(str(compiled), names, binds, fixed, results, row)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Execute with ``params`` (by bind name) in ``conn``'s transaction; the rows it returns."""
        given = {**self.fixed, **params} if self.fixed else params
        values = tuple(
            given[name] if bind is None else bind(given[name])
            for name, bind in zip(self.names, self.binds, strict=True)
        )
        dbapi_error = conn.dialect.loaded_dbapi.Error
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, values)
            fetched = cursor.fetchall() if cursor.description else []
        except dbapi_error as exc:  # as SQLAlchemy raises it (IntegrityError, OperationalError, ...)
            raise sa.exc.DBAPIError.instance(self.sql, values, exc, dbapi_error) from exc
        finally:
            cursor.close()
        results, make = self.results, self.row
        return [
            make([raw if result is None else result(raw) for raw, result in zip(found, results, strict=True)])
            for found in fetched
        ]


def _typed(kind: sa.types.TypeEngine[Any], dialect: Dialect) -> sa.types.TypeEngine[Any]:
    """The type as the dialect implements it (SQLite's DATETIME stores text, for instance), whose
    processors are the ones SQLAlchemy applies."""
    return kind.dialect_impl(dialect)


_COMPILED: dict[Hashable, DirectStatement] = {}


def compiled_once(key: Hashable, build: Callable[[], DirectStatement]) -> DirectStatement:
    """The direct statement cached under ``key`` (which names the dialect), built on first use."""
    found = _COMPILED.get(key)
    if found is None:
        found = _COMPILED[key] = build()
    return found


def direct_select(statement: sa.Select[Any], dialect: Dialect) -> DirectStatement:
    """A module-level SELECT as a direct statement for ``dialect``; its rows hold its selected columns."""

    def build() -> DirectStatement:
        columns = [
            sa.column(column.name or f"_{n}", column.type)
            for n, column in enumerate(statement.selected_columns)
        ]
        return DirectStatement.compile(statement, dialect, columns)

    return compiled_once((dialect.name, statement), build)  # a SELECT hashes by identity
