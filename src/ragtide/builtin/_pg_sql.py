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
HNSW_MAX_DIMS = 4000  # pgvector's limit for indexing the ``halfvec`` type

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
    # 3: bulk writes and index-driven keyword top-k. Chunk ids are reserved from the
    # sequence before a write, so chunks and postings can be COPYed (BY DEFAULT). Each
    # posting carries its BM25 impact (the term-frequency part of its score, idf aside) and
    # is indexed by (namespace, term, impact DESC) with the scoring columns included: a
    # term's best postings are the head of an index-only scan, and its whole list still is
    # one scan. Postings are keyed by (chunk, term) for deletes and exact rescoring. The
    # table is rebuilt, not updated in place (no dead tuples, the indexes built once).
    """
    ALTER TABLE chunks ALTER COLUMN id SET GENERATED BY DEFAULT;
    CREATE TABLE postings_v3(
        namespace_id integer NOT NULL,
        term text NOT NULL,
        chunk bigint NOT NULL,
        length integer NOT NULL,
        tf_title integer NOT NULL,
        tf_headings integer NOT NULL,
        tf_text integer NOT NULL,
        impact real NOT NULL
    );
    INSERT INTO postings_v3
    SELECT p.namespace_id, p.term, p.chunk, p.length, p.tf_title, p.tf_headings, p.tf_text,
        x.f / (x.f + 1.2 * (0.25 + 0.75 * p.length / greatest(
            n.token_count::float8 / nullif(n.chunk_count, 0), 1)))
    FROM postings p JOIN namespaces n ON n.id = p.namespace_id,
        LATERAL (SELECT (p.tf_title + p.tf_headings + p.tf_text)::float8 AS f) x;
    DROP TABLE postings;
    ALTER TABLE postings_v3 RENAME TO postings;
    ALTER TABLE postings ADD CONSTRAINT postings_pkey PRIMARY KEY (chunk, term);
    CREATE INDEX postings_by_impact ON postings(namespace_id, term, impact DESC)
        INCLUDE (chunk, length, tf_title, tf_headings, tf_text);
    """,
    # 4: vector indexes on half-precision vectors (half the memory and pages; searches
    # order the candidates by their exact distance). Each float32 index is replaced here,
    # with the default graph parameters, so a database that only searches has one.
    """
    DO $$
    DECLARE d integer;
    BEGIN
        FOR d IN SELECT substring(indexname FROM '[0-9]+$')::integer FROM pg_indexes
            WHERE schemaname = current_schema() AND indexname ~ '^chunks_embedding_[0-9]+$'
        LOOP
            EXECUTE format('DROP INDEX chunks_embedding_%s', d);
            EXECUTE format('CREATE INDEX chunks_halfvec_%s ON chunks USING hnsw'
                ' ((embedding::halfvec(%s)) halfvec_cosine_ops)'
                ' WHERE vector_dims(embedding) = %s', d, d, d);
        END LOOP;
    END $$;
    """,
    # 5: room on the pages of ``terms`` for the df updates every write makes (~13 per
    # chunk): an update that fits on its row's page is HOT (no new index entry). Measured
    # on 10k chunks: 23% less database CPU for the term statistics, ~10% of a write's.
    # Pages written from now on keep the room; the table is not rewritten.
    """
    ALTER TABLE terms SET (fillfactor = 50);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

CHUNK_COLUMNS = "c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings, c.metadata"
NS = "(SELECT id FROM namespaces WHERE name = %(name)s)"
# Documents' chunks out of the keyword statistics and the tables, in three statements
# that need nothing from one another: drop the terms only these documents still had, take
# the others down by their counts, then delete chunks and postings and shrink the totals.
DELETE_CHUNKS = (
    "DELETE FROM terms t USING ("
    " SELECT p.term, count(*) AS n FROM chunks c JOIN postings p ON p.chunk = c.id"
    f" WHERE c.namespace_id = {NS} AND c.document_id = ANY(%(docs)s::text[])"
    " GROUP BY p.term) x"
    f" WHERE t.namespace_id = {NS} AND t.term = x.term AND t.df <= x.n",
    "WITH gone AS (DELETE FROM postings p USING chunks c"
    f" WHERE c.namespace_id = {NS} AND c.document_id = ANY(%(docs)s::text[])"
    " AND p.chunk = c.id RETURNING p.term),"
    " counted AS (SELECT term, count(*) AS n FROM gone GROUP BY term)"
    " UPDATE terms t SET df = t.df - counted.n FROM counted"
    f" WHERE t.namespace_id = {NS} AND t.term = counted.term",
    "WITH gone AS (DELETE FROM chunks"
    f" WHERE namespace_id = {NS} AND document_id = ANY(%(docs)s::text[]) RETURNING length)"
    " UPDATE namespaces SET chunk_count = chunk_count - (SELECT count(*) FROM gone),"
    " token_count = token_count - (SELECT coalesce(sum(length), 0) FROM gone)"
    " WHERE name = %(name)s",
)
COPY_CHUNKS = (
    "COPY chunks(id, namespace_id, document_id, position, chunk_id, ordinal, title, headings,"
    " text, metadata, embedder, embedding, length) FROM STDIN"
)
COPY_POSTINGS = (
    "COPY postings(namespace_id, term, chunk, length, tf_title, tf_headings, tf_text, impact)"
    " FROM STDIN"
)
# Creates the namespace or locks its row (writers of one namespace queue here).
LOCK_NAMESPACE = (
    "INSERT INTO namespaces(name, created_at) VALUES (%(name)s, %(now)s) ON CONFLICT (name)"
    " DO UPDATE SET generation = namespaces.generation + 1 RETURNING id"
)
UPSERT_DOCUMENTS = (
    "INSERT INTO documents(namespace_id, id, title, source, content_hash, metadata, chunks,"
    " created_at, updated_at, bytes)"
    " SELECT %(ns_id)s, u.id, u.title, u.source, u.hash, u.metadata::jsonb, u.chunks,"
    "  u.created, u.updated, u.bytes"
    " FROM unnest(%(ids)s::text[], %(titles)s::text[], %(sources)s::text[], %(hashes)s::text[],"
    "  %(metadata)s::text[], %(chunks)s::int[], %(created)s::float8[], %(updated)s::float8[],"
    "  %(bytes)s::int8[]) AS u(id, title, source, hash, metadata, chunks, created, updated, bytes)"
    " ON CONFLICT (namespace_id, id) DO UPDATE SET title = excluded.title,"
    " source = excluded.source, content_hash = excluded.content_hash,"
    " metadata = excluded.metadata, chunks = excluded.chunks,"
    " updated_at = excluded.updated_at, bytes = excluded.bytes"
)
# Terms in one order: concurrent upserts cannot deadlock. The terms come as one text, one
# per line, their counts as one comma-separated text.
UPSERT_TERMS = (
    "INSERT INTO terms(namespace_id, term, df) SELECT %(ns_id)s, u.term, u.df"
    " FROM unnest(string_to_array(%(terms)s::text, E'\\n'),"
    "  string_to_array(%(df)s::text, ',')::int[]) AS u(term, df)"
    " ON CONFLICT (namespace_id, term) DO UPDATE SET df = terms.df + excluded.df"
)
DOCUMENT_COLUMNS = "id, title, source, content_hash, chunks, created_at, updated_at, metadata"
# The keyword top-k's index (migration 3 made it): name and DDL, for bulk_load to build it
# again after a load.
POSTINGS_INDEX = (
    "postings_by_impact",
    "CREATE INDEX CONCURRENTLY postings_by_impact ON postings(namespace_id, term, impact DESC)"
    " INCLUDE (chunk, length, tf_title, tf_headings, tf_text)",
)
# A namespace and everything in it; postings and terms have no foreign key (see above),
# chunks go with their documents (ON DELETE CASCADE).
DELETE_NAMESPACE = (
    "DELETE FROM postings WHERE namespace_id = %(id)s",
    "DELETE FROM terms WHERE namespace_id = %(id)s",
    "DELETE FROM documents WHERE namespace_id = %(id)s",
    "DELETE FROM namespaces WHERE id = %(id)s",
)


# BM25 of one posting, with the namespace's statistics (ns) and the term's idf; all float8:
# an int or numeric operand here costs more than the scan itself.
_SCORE = "idf.idf * ({f}) * (%(k1)s + 1) / (({f}) + ns.norm0 + ns.norm1 * {p}.length)"
_F = "%(wt)s * {p}.tf_title + %(wh)s * {p}.tf_headings + %(wx)s * {p}.tf_text"
_KEYWORD_STATS = (
    "WITH ns AS MATERIALIZED ("
    " SELECT id, chunk_count::float8 AS n, %(k1)s * (1 - %(b)s) AS norm0,"
    "  %(k1)s * %(b)s / CASE WHEN token_count > 0"
    "   THEN token_count::float8 / chunk_count ELSE 1 END AS norm1"
    " FROM namespaces WHERE name = %(ns)s),"
    " idf AS MATERIALIZED ("
    " SELECT t.term, t.df, ln(1 + (ns.n - t.df + 0.5::float8) / (t.df + 0.5::float8)) AS idf"
    " FROM ns JOIN terms t ON t.namespace_id = ns.id"
    " WHERE t.term = ANY(%(terms)s::text[]))"
)


def _score(p: str) -> str:
    return _SCORE.format(f=_F.format(p=p), p=p)


def keyword_sql(where: str, *, candidates: int) -> str:
    """The ``limit`` best chunks by BM25, with their exact scores.

    ``candidates`` 0 scores every posting of every query term (exact; cost grows with the
    namespace), as does a filtered search. Otherwise each term contributes its
    ``candidates`` highest-impact postings (the head of an index scan on
    ``postings_by_impact``); the chunks are ranked by the
    part of their score those postings give, and the best ``rescore`` of them are scored
    exactly: a primary-key probe for each of them and each term whose list was cut where the
    chunk was not in the head. The cost is bounded by the number of terms, whatever the size
    of the namespace. When the terms' lists hold at most twice what the heads would read,
    they are scored whole instead (exact, and cheaper), as they are while a bulk load has
    dropped ``postings_by_impact`` (one scan, not one per term). The rows end with the number of
    terms cut and the best score a chunk left out could have: when the ``limit``-th score
    is below it, the caller reads deeper (see ``PostgresStore.keyword_search``).
    """
    every = (
        f" SELECT p.chunk, sum({_score('p')}) AS score"
        " FROM ns JOIN idf ON true"
        "  JOIN postings p ON p.namespace_id = ns.id AND p.term = idf.term"
    )
    if candidates <= 0 or where:
        scores = f"{_KEYWORD_STATS}, scores AS ({every} GROUP BY p.chunk)"
    else:
        # heads: each term's best postings with their exact part of the score; cand: the
        # chunks best by those parts; missing: their postings of the terms whose lists
        # were cut (a term read whole has no posting for a chunk not in its head).
        # whole: the terms' lists are short enough (at most twice what the heads would
        # read) that scoring them all costs less than heads and probes; one branch runs.
        scores = (
            f"{_KEYWORD_STATS}, gate AS MATERIALIZED (SELECT coalesce(sum(df), 0)"
            "  <= 2 * coalesce(sum(least(df, %(candidates)s)), 0)"
            # No impact index (a bulk load builds it at its end): heads would scan the
            # table once per term, the whole lists take one scan.
            "  OR to_regclass(quote_ident(current_schema()) || '.postings_by_impact') IS NULL"
            "  AS whole FROM idf),"
            " heads AS MATERIALIZED ("
            f" SELECT h.chunk, idf.term, {_score('h')} AS s"
            " FROM ns JOIN idf ON true, LATERAL (SELECT p.chunk, p.length, p.tf_title,"
            "   p.tf_headings, p.tf_text FROM postings p"
            "   WHERE p.namespace_id = ns.id AND p.term = idf.term"
            "   ORDER BY p.impact DESC LIMIT %(candidates)s) h"
            " WHERE NOT (SELECT whole FROM gate)),"
            " ranked AS (SELECT chunk, sum(s) AS partial FROM heads GROUP BY chunk),"
            " cand AS (SELECT chunk, partial FROM ranked"
            "  ORDER BY partial DESC, chunk LIMIT %(rescore)s),"
            # What a chunk outside the candidates can score at most: its part of the heads
            # (none, or the best partial left out) plus, for each cut term, the score of
            # the term's last posting read.
            " bound AS (SELECT coalesce((SELECT partial FROM ranked"
            "   ORDER BY partial DESC, chunk OFFSET %(rescore)s LIMIT 1), 0)"
            "  + coalesce(sum(floor), 0) AS bound, count(*) AS cut"
            "  FROM (SELECT min(heads.s) AS floor FROM heads JOIN idf USING (term)"
            "   WHERE idf.df > %(candidates)s GROUP BY heads.term) f),"
            # LATERAL: one primary-key probe per (chunk, term), never a scan of the term.
            " missing AS ("
            f" SELECT cand.chunk, sum({_score('p')}) AS s"
            " FROM cand CROSS JOIN idf CROSS JOIN ns, LATERAL (SELECT p.length, p.tf_title,"
            "   p.tf_headings, p.tf_text FROM postings p"
            "   WHERE p.chunk = cand.chunk AND p.term = idf.term LIMIT 1) p"
            " WHERE idf.df > %(candidates)s AND NOT EXISTS (SELECT FROM heads"
            "  WHERE heads.chunk = cand.chunk AND heads.term = idf.term)"
            " GROUP BY cand.chunk),"
            " scores AS (SELECT cand.chunk, cand.partial + coalesce(missing.s, 0) AS score"
            "  FROM cand LEFT JOIN missing USING (chunk)"
            f" UNION ALL{every} AND (SELECT whole FROM gate) GROUP BY p.chunk)"
        )
    if candidates > 0 and not where:
        return (
            f"{scores}, top AS (SELECT chunk, score FROM scores"
            "  ORDER BY score DESC, chunk LIMIT %(limit)s)"
            f" SELECT {CHUNK_COLUMNS}, top.score, bound.cut, bound.bound"
            " FROM top JOIN chunks c ON c.id = top.chunk CROSS JOIN bound"
            " ORDER BY top.score DESC, top.chunk"
        )
    if where:
        return (
            f"{scores} SELECT {CHUNK_COLUMNS}, s.score FROM scores s"
            f" JOIN chunks c ON c.id = s.chunk WHERE TRUE{where}"
            " ORDER BY s.score DESC, s.chunk LIMIT %(limit)s"
        )
    return (
        f"{scores}, top AS (SELECT chunk, score FROM scores"
        "  ORDER BY score DESC, chunk LIMIT %(limit)s)"
        f" SELECT {CHUNK_COLUMNS}, top.score FROM top JOIN chunks c ON c.id = top.chunk"
        " ORDER BY top.score DESC, top.chunk"
    )


def vector_sql(dims: int, where: str, *, indexed: bool) -> str:
    """Nearest chunks by cosine distance.

    ``indexed`` walks the HNSW index's expression (half-precision vectors, approximate) for
    ``depth`` candidates and orders them by their exact float32 distance; otherwise a plain
    expression no index matches scans the namespace (exact).
    """
    if indexed:
        # Its own parameter: one used as halfvec and vector would be typed halfvec.
        approx = f"c.embedding::halfvec({dims}) <=> %(qh)s::halfvec({dims})"
        depth = "%(depth)s"
    else:
        approx, depth = "c.embedding <=> %(q)s::vector", "%(limit)s"
    return (
        "WITH ns AS (SELECT id, embedder FROM namespaces WHERE name = %(ns)s),"
        f" near AS MATERIALIZED (SELECT c.id FROM chunks c"
        " WHERE c.namespace_id = (SELECT id FROM ns) AND c.embedder = (SELECT embedder FROM ns)"
        f" AND vector_dims(c.embedding) = {dims}{where}"
        f" ORDER BY {approx} LIMIT {depth}),"
        " exact AS (SELECT near.id, c.embedding <=> %(q)s::vector AS distance"
        "  FROM near JOIN chunks c ON c.id = near.id"
        "  ORDER BY distance, near.id LIMIT %(limit)s)"
        f" SELECT {CHUNK_COLUMNS}, 1 - exact.distance FROM exact JOIN chunks c ON c.id = exact.id"
        " ORDER BY exact.distance, exact.id"
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
