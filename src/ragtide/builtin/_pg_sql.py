"""The PostgreSQL store's schema, its migrations, its SQL and its row decoders.

Pure data and functions; ``postgres_store.PostgresStore`` runs them.
"""

from __future__ import annotations

import re
from typing import Any

from ragtide.components import Vectors
from ragtide.errors import InvalidRequest
from ragtide.types import Filter

IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
HNSW_MAX_DIMS = 2000  # pgvector's limit for indexing the ``vector`` type

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE namespaces(
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at double precision NOT NULL,
        generation bigint NOT NULL DEFAULT 0,
        embedder text NOT NULL DEFAULT '',
        chunk_count bigint NOT NULL DEFAULT 0,
        token_count bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE documents(
        namespace_id integer NOT NULL REFERENCES namespaces(id),
        id text NOT NULL,
        title text NOT NULL,
        source text NOT NULL,
        content_hash text NOT NULL,
        metadata jsonb NOT NULL,
        chunks integer NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        PRIMARY KEY (namespace_id, id)
    );
    CREATE TABLE chunks(
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        namespace_id integer NOT NULL,
        document_id text NOT NULL,
        position integer NOT NULL,
        chunk_id text NOT NULL,
        ordinal integer NOT NULL,
        title text NOT NULL,
        headings jsonb NOT NULL,
        text text NOT NULL,
        metadata jsonb NOT NULL,
        embedder text NOT NULL,
        embedding vector NOT NULL,
        length integer NOT NULL,
        UNIQUE (namespace_id, document_id, position),
        FOREIGN KEY (namespace_id, document_id) REFERENCES documents ON DELETE CASCADE
    );
    -- Written and deleted with their chunk by the store (no FK: it would cost a lookup
    -- per posting on every write). INCLUDE makes scoring an index-only scan.
    CREATE TABLE postings(
        namespace_id integer NOT NULL,
        term text NOT NULL,
        chunk bigint NOT NULL,
        length integer NOT NULL,
        tf_title integer NOT NULL,
        tf_headings integer NOT NULL,
        tf_text integer NOT NULL,
        PRIMARY KEY (namespace_id, term, chunk)
            INCLUDE (length, tf_title, tf_headings, tf_text)
    );
    CREATE INDEX postings_by_chunk ON postings(chunk);
    CREATE TABLE terms(
        namespace_id integer NOT NULL,
        term text NOT NULL,
        df integer NOT NULL,
        PRIMARY KEY (namespace_id, term)
    );
    -- The strings Condition.matches compares: str() of the value, or of each list element.
    CREATE FUNCTION filter_text(v jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN CASE jsonb_typeof(v)
        WHEN 'boolean' THEN initcap(v #>> '{}')
        WHEN 'null' THEN 'None'
        ELSE v #>> '{}' END;
    CREATE FUNCTION filter_values(v jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN CASE
        WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN '{}'::text[]
        WHEN jsonb_typeof(v) = 'array'
            THEN ARRAY(SELECT filter_text(e) FROM jsonb_array_elements(v) AS e)
        ELSE ARRAY[filter_text(v)] END;
    """,
    # 2: namespaces belong to tenants (every earlier namespace becomes the default
    # tenant's), documents carry their byte count for quotas, tenants and API keys.
    """
    UPDATE namespaces SET name = 'default/' || name WHERE strpos(name, '/') = 0;
    ALTER TABLE namespaces ADD COLUMN tenant text GENERATED ALWAYS AS (
        CASE WHEN strpos(name, '/') > 0 THEN split_part(name, '/', 1) ELSE 'default' END
    ) STORED;
    CREATE INDEX namespaces_by_tenant ON namespaces(tenant);
    ALTER TABLE documents ADD COLUMN bytes bigint NOT NULL DEFAULT 0;
    UPDATE documents d SET bytes = coalesce((SELECT sum(octet_length(c.text)) FROM chunks c
        WHERE c.namespace_id = d.namespace_id AND c.document_id = d.id), 0);
    CREATE TABLE tenants(
        id text PRIMARY KEY,
        config jsonb NOT NULL,
        version bigint NOT NULL,
        webhook_secret text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE TABLE api_keys(
        id text PRIMARY KEY,
        tenant text NOT NULL,
        prefix text NOT NULL,
        hash text NOT NULL UNIQUE,
        scopes jsonb NOT NULL,
        namespaces jsonb,
        description text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision,
        revoked_at double precision
    );
    CREATE INDEX api_keys_by_tenant ON api_keys(tenant);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

CHUNK_COLUMNS = "c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings, c.metadata"
CHUNK_ARRAYS = (
    "position",
    "chunk_id",
    "ordinal",
    "title",
    "headings",
    "text",
    "metadata",
    "embedding",
    "length",
)
POSTING_ARRAYS = ("p_position", "p_term", "p_title", "p_headings", "p_text")
NS = "(SELECT id FROM namespaces WHERE name = %(name)s)"
# A document's chunks out of the keyword statistics and the tables, in three statements
# that need nothing from one another: drop the terms only this document still had, take
# the others down by its counts, then delete chunks and postings and shrink the totals.
DELETE_CHUNKS = (
    "DELETE FROM terms t USING ("
    " SELECT p.term, count(*) AS n FROM chunks c JOIN postings p ON p.chunk = c.id"
    f" WHERE c.namespace_id = {NS} AND c.document_id = %(doc)s GROUP BY p.term) x"
    f" WHERE t.namespace_id = {NS} AND t.term = x.term AND t.df <= x.n",
    "WITH gone AS (DELETE FROM postings p USING chunks c"
    f" WHERE c.namespace_id = {NS} AND c.document_id = %(doc)s AND p.chunk = c.id"
    " RETURNING p.term),"
    " counted AS (SELECT term, count(*) AS n FROM gone GROUP BY term)"
    " UPDATE terms t SET df = t.df - counted.n FROM counted"
    f" WHERE t.namespace_id = {NS} AND t.term = counted.term",
    "WITH gone AS (DELETE FROM chunks"
    f" WHERE namespace_id = {NS} AND document_id = %(doc)s RETURNING length)"
    " UPDATE namespaces SET chunk_count = chunk_count - (SELECT count(*) FROM gone),"
    " token_count = token_count - (SELECT coalesce(sum(length), 0) FROM gone)"
    " WHERE name = %(name)s",
)
INSERT_CHUNKS = (
    "WITH new AS ("
    " INSERT INTO chunks(namespace_id, document_id, position, chunk_id, ordinal, title,"
    "  headings, text, metadata, embedder, embedding, length)"
    f" SELECT {NS}, %(doc)s, u.position, u.chunk_id, u.ordinal, u.title,"
    "  u.headings::jsonb, u.text, u.metadata::jsonb, %(embedder)s, u.embedding::vector,"
    "  u.length"
    " FROM unnest(%(position)s::int[], %(chunk_id)s::text[], %(ordinal)s::int[],"
    "  %(title)s::text[], %(headings)s::text[], %(text)s::text[], %(metadata)s::text[],"
    "  %(embedding)s::text[], %(length)s::int[])"
    "  AS u(position, chunk_id, ordinal, title, headings, text, metadata, embedding, length)"
    " RETURNING id, namespace_id, position, length)"
    " INSERT INTO postings(namespace_id, term, chunk, length, tf_title, tf_headings, tf_text)"
    " SELECT new.namespace_id, p.term, new.id, new.length, p.tf_title, p.tf_headings,"
    "  p.tf_text"
    " FROM unnest(%(p_position)s::int[], %(p_term)s::text[], %(p_title)s::int[],"
    "  %(p_headings)s::int[], %(p_text)s::int[])"
    "  AS p(position, term, tf_title, tf_headings, tf_text)"
    " JOIN new USING (position)"
)
DOCUMENT_COLUMNS = "id, title, source, content_hash, chunks, created_at, updated_at, metadata"
# A namespace and everything in it; postings and terms have no foreign key (see above),
# chunks go with their documents (ON DELETE CASCADE).
DELETE_NAMESPACE = (
    "DELETE FROM postings WHERE namespace_id = %(id)s",
    "DELETE FROM terms WHERE namespace_id = %(id)s",
    "DELETE FROM documents WHERE namespace_id = %(id)s",
    "DELETE FROM namespaces WHERE id = %(id)s",
)


def vector_sql(dims: int, where: str, *, indexed: bool) -> str:
    """Nearest chunks by cosine distance; ``indexed`` uses the expression the HNSW index has
    (approximate), otherwise a plain expression no index matches (exact)."""
    if indexed:
        distance = f"c.embedding::vector({dims}) <=> %(q)s::vector({dims})"
    else:
        distance = "c.embedding <=> %(q)s::vector"
    return (
        "WITH ns AS (SELECT id, embedder FROM namespaces WHERE name = %(ns)s),"
        f" near AS MATERIALIZED (SELECT c.id, {distance} AS distance FROM chunks c"
        " WHERE c.namespace_id = (SELECT id FROM ns) AND c.embedder = (SELECT embedder FROM ns)"
        f" AND vector_dims(c.embedding) = {dims}{where}"
        " ORDER BY distance LIMIT %(limit)s)"
        f" SELECT {CHUNK_COLUMNS}, 1 - near.distance FROM near JOIN chunks c ON c.id = near.id"
        " ORDER BY near.distance, near.id"
    )


def filter_sql(filter: Filter) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for i, cond in enumerate(filter.conditions):
        params[f"fv{i}"] = sorted(cond.values)
        if cond.field == "document_id":
            clauses.append(f" AND c.document_id = ANY(%(fv{i})s::text[])")
            continue
        if not FIELD.fullmatch(cond.field):
            raise InvalidRequest(f"invalid filter field {cond.field!r}")
        params[f"ff{i}"] = cond.field
        clauses.append(f" AND filter_values(c.metadata -> %(ff{i})s) && %(fv{i})s::text[]")
    return "".join(clauses), params


def vector_text(vector: Vectors) -> str:
    return "[" + ",".join(map(repr, vector.tolist())) + "]"
