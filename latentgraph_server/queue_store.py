"""The persistent prompt queue and history, in SQLite (WAL).

One table holds every prompt the server accepted; ``state`` moves it from
``pending`` to ``running`` to ``done``. A row is written before POST /prompt
answers, and a finished prompt's history is written in the same transaction that
takes it out of the queue, so a ``kill -9`` loses nothing: on restart, pending
prompts run and a prompt found ``running`` is recorded as interrupted.

Thread-safe: the event loop and the worker thread share one connection under a lock.

Damage is contained: a database file SQLite cannot read is moved aside (its new name is
logged and kept in ``moved_aside``) and a fresh one started; a row whose JSON cannot be
read is skipped by the history and queue listings (and logged), and failed by the worker.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.executor import error_event, failed_status, interrupted_event
from latentgraph_server import json_text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id TEXT,
    created REAL NOT NULL,
    finished_seq INTEGER,
    outputs TEXT,
    status TEXT,
    meta TEXT
);
CREATE INDEX IF NOT EXISTS prompts_queue ON prompts (state, number, seq);
CREATE INDEX IF NOT EXISTS prompts_history ON prompts (finished_seq);
"""

RESTART_MESSAGE = "the server stopped while this prompt was running"
CORRUPT_ROW_MESSAGE = "the stored prompt could not be read back (a damaged database row)"

log = logging.getLogger("latentgraph.queue")


def shown_number(number: float) -> float | int:
    """A queue number as ComfyUI shows it: stored as a REAL, integral ones without a fraction."""
    return int(number) if float(number).is_integer() else number


def to_json(value: Any, size_hint: int = 0) -> str:
    """JSON text for anything a node may put in its UI payload (odd objects become repr);
    ``size_hint`` as in ``json_text.dumps``."""
    return json_text.dumps(value, size_hint)


@dataclass
class QueueItem:
    """One queued prompt; ``as_list`` is ComfyUI's queue item shape."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None

    def as_list(self) -> list[Any]:
        return [shown_number(self.number), self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


class QueueStore:
    """Queue and history on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.moved_aside: Path | None = None
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if str(path) == ":memory:":
                raise
            self.moved_aside = self._move_aside(exc)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            problem = db.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {problem}")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> Path:
        """Renames an unreadable database (and its WAL files) so a fresh one can start."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                source.replace(Path(str(target) + suffix))
        log.error("the queue database %s cannot be read (%s); it was moved to %s and a new one started",
                  self.path, exc, target)
        return target

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the queue ---------------------------------------------------------------

    def add(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
            outputs_to_execute: list[str], client_id: str | None, *,
            number: float | None = None, front: bool = False, size_hint: int = 0) -> float:
        """Appends a pending prompt (or puts it first with ``front``); returns its number.

        ``size_hint``: about how many bytes the prompt and extra_data take as JSON (the
        request body's size), so large ones are written without holding the GIL for long.
        """
        prompt_text, extra_text = to_json(prompt, size_hint), to_json(extra_data, size_hint)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if number is None:
                if front:
                    row = self._db.execute("SELECT MIN(number) FROM prompts WHERE state = 'pending'").fetchone()
                    number = min(row[0] if row[0] is not None else 0, 0) - 1
                else:
                    row = self._db.execute("SELECT MAX(number) FROM prompts").fetchone()
                    number = max(row[0] if row[0] is not None else 0, 0) + 1
                    number = float(int(number))
            self._db.execute(
                "INSERT INTO prompts (prompt_id, number, state, prompt, extra_data, outputs_to_execute, "
                "client_id, created) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
                (prompt_id, number, prompt_text, extra_text, to_json(outputs_to_execute),
                 client_id, time.time()),
            )
        return number

    def exists(self, prompt_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return row is not None

    def claim_next(self) -> QueueItem | None:
        """Marks the first pending prompt as running and returns it (a row that cannot be
        read is recorded as failed and skipped)."""
        while True:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM prompts WHERE state = 'pending' ORDER BY number, seq LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                self._db.execute("UPDATE prompts SET state = 'running' WHERE prompt_id = ?", (row[1],))
            try:
                return _item(row)
            except (ValueError, TypeError) as exc:
                log.error("queued prompt %s cannot be read (%s); recorded as failed", row[1], exc)
                self.finish(row[1], {}, failed_status("execution_error",
                                                      error_event(row[1], CORRUPT_ROW_MESSAGE, "DamagedRow")))

    def requeue(self, prompt_id: str) -> bool:
        """Puts a running prompt back in the queue at its old place (its worker was lost
        before it finished, latentgraph_server/ray_dispatch.py); False if it is not running."""
        with self._lock, self._db:
            cursor = self._db.execute("UPDATE prompts SET state = 'pending' WHERE prompt_id = ? AND state = 'running'",
                                      (prompt_id,))
        return cursor.rowcount == 1

    def pending(self) -> list[QueueItem]:
        return self._items("pending")

    def running(self) -> list[QueueItem]:
        return self._items("running")

    def _items(self, state: str) -> list[QueueItem]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM prompts WHERE state = ? ORDER BY number, seq", (state,)
            ).fetchall()
        return _readable(rows, _item)

    def queue_json(self) -> str:
        """GET /queue's body, assembled from the stored JSON text without decoding it
        (the queue can hold hundreds of prompts, and this is polled while busy)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, number, prompt_id, prompt, extra_data, outputs_to_execute FROM prompts "
                "WHERE state IN ('running', 'pending') "
                # A damaged row is left out rather than spliced into the body as broken JSON.
                "AND json_valid(prompt) AND json_valid(extra_data) AND json_valid(outputs_to_execute) "
                "ORDER BY number, seq"
            ).fetchall()
        lists: dict[str, list[str]] = {"running": [], "pending": []}
        for state, number, prompt_id, prompt, extra_data, outputs in rows:
            shown = json.dumps(shown_number(number))
            lists[state].append(f"[{shown},{json.dumps(prompt_id)},{prompt},{extra_data},{outputs}]")
        return f'{{"queue_running":[{",".join(lists["running"])}],"queue_pending":[{",".join(lists["pending"])}]}}'

    def remaining(self) -> int:
        """Pending plus running prompts (what clients see as queue_remaining)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM prompts WHERE state IN ('pending', 'running')").fetchone()
        return int(row[0])

    def delete_pending(self, prompt_ids: list[str]) -> int:
        with self._lock, self._db:
            deleted = 0
            for prompt_id in prompt_ids:
                cursor = self._db.execute("DELETE FROM prompts WHERE prompt_id = ? AND state = 'pending'",
                                          (prompt_id,))
                deleted += cursor.rowcount
        return deleted

    def clear_pending(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM prompts WHERE state = 'pending'").rowcount

    def finish(self, prompt_id: str, outputs: dict[str, Any], status: dict[str, Any],
               meta: dict[str, Any] | None = None) -> None:
        """Records how a prompt ended; it leaves the queue and enters history at once."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT COALESCE(MAX(finished_seq), 0) + 1 FROM prompts").fetchone()
            self._db.execute(
                "UPDATE prompts SET state = 'done', finished_seq = ?, outputs = ?, status = ?, meta = ? "
                "WHERE prompt_id = ?",
                (row[0], to_json(outputs), to_json(status), to_json(meta or {}), prompt_id),
            )

    def recover_interrupted(self) -> list[str]:
        """Prompts left ``running`` by a crash are finished as interrupted; returns their ids."""
        with self._lock:
            ids = [row[0] for row in self._db.execute("SELECT prompt_id FROM prompts WHERE state = 'running'")]
        for prompt_id in ids:
            self.finish(prompt_id, {}, failed_status("execution_interrupted",
                                                     interrupted_event(prompt_id, reason=RESTART_MESSAGE)))
        return ids

    # -- history -----------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """Finished prompts, oldest first. As in ComfyUI, ``max_items`` alone gives the
        newest that many; with ``offset`` >= 0 the window starts there."""
        with self._lock:
            if max_items is None:
                rows = self._db.execute(
                    f"SELECT {_HISTORY_COLUMNS} FROM prompts WHERE state = 'done' ORDER BY finished_seq"
                ).fetchall()
            else:
                if offset < 0:
                    total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE state = 'done'").fetchone()[0]
                    offset = max(total - max_items, 0)
                rows = self._db.execute(
                    f"SELECT {_HISTORY_COLUMNS} FROM prompts WHERE state = 'done' ORDER BY finished_seq "
                    "LIMIT ? OFFSET ?", (max(max_items, 0), offset),
                ).fetchall()
        return dict(_readable(rows, _history_entry))

    def job_rows(self) -> list[tuple[Any, ...]]:
        """Every prompt, light: ``(state, number, prompt_id, create_time, workflow_id, outputs,
        status)`` with outputs and status as stored JSON text (None while queued). For
        ``/jobs``, which the frontend polls: SQLite picks the two fields out of extra_data, so
        the prompts and editor workflows stored with each are never decoded here."""
        with self._lock:
            return self._db.execute(
                "SELECT state, number, prompt_id, "
                "CASE WHEN json_valid(extra_data) THEN json_extract(extra_data, '$.create_time') END, "
                "CASE WHEN json_valid(extra_data) THEN json_extract(extra_data, '$.extra_pnginfo.workflow.id') END, "
                "outputs, status FROM prompts ORDER BY seq"
            ).fetchall()

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM prompts WHERE state = 'done' AND prompt_id = ?", (prompt_id,)
            ).fetchone()
        return dict(_readable([row], _history_entry)) if row else {}

    def delete_history(self, prompt_ids: list[str]) -> int:
        with self._lock, self._db:
            deleted = 0
            for prompt_id in prompt_ids:
                deleted += self._db.execute("DELETE FROM prompts WHERE prompt_id = ? AND state = 'done'",
                                            (prompt_id,)).rowcount
        return deleted

    def clear_history(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM prompts WHERE state = 'done'").rowcount


_ITEM_COLUMNS = "number, prompt_id, prompt, extra_data, outputs_to_execute, client_id"
_HISTORY_COLUMNS = _ITEM_COLUMNS + ", outputs, status, meta"


def _readable(rows: list[tuple], read: Any) -> list[Any]:
    """``read(row)`` for each row, skipping (and logging) rows whose stored JSON is damaged:
    one bad row must not make a whole listing fail."""
    found = []
    for row in rows:
        try:
            found.append(read(row))
        except (ValueError, TypeError) as exc:
            log.error("skipped unreadable stored prompt %r: %s", row[1] if len(row) > 1 else "?", exc)
    return found


def _item(row: tuple) -> QueueItem:
    number, prompt_id, prompt, extra_data, outputs, client_id = row[:6]
    return QueueItem(number, prompt_id, json_text.loads(prompt), json_text.loads(extra_data), json.loads(outputs),
                     client_id)


def _history_entry(row: tuple) -> tuple[str, dict[str, Any]]:
    item = _item(row)
    outputs, status, meta = row[6:9]
    return item.prompt_id, {
        "prompt": item.as_list(),
        "outputs": json.loads(outputs or "{}"),
        "status": json.loads(status or "{}"),
        "meta": json.loads(meta or "{}"),
    }
