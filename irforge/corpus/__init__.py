"""The corpus: reading documents in any supported layout, screening bad rows, cutting passages, the one
definition of a passage's text, and the collection's judgments (queries and qrels)."""

from irforge.corpus.chunking import Chunker, document_hash, sentence_starts, split_windows
from irforge.corpus.judgments import (
    SPLITS,
    JudgmentsError,
    load_qrels,
    load_queries,
    qrels_of,
    queries_of,
    read_json_lines,
    split_queries,
    splits_of,
)
from irforge.corpus.leakage import leak_reasons
from irforge.corpus.readers import (
    BadRow,
    CorpusError,
    Document,
    LoadedCorpus,
    corpus_file,
    detect_format,
    load_documents,
    read_corpus,
    screen_documents,
)
from irforge.corpus.text import PASSAGE_TEXT_VERSION, passage_text, sha256_text

__all__ = [
    "SPLITS", "BadRow", "Chunker", "CorpusError", "Document", "JudgmentsError", "LoadedCorpus", "corpus_file",
    "detect_format", "document_hash", "leak_reasons", "PASSAGE_TEXT_VERSION", "load_documents", "load_qrels", "load_queries",
    "passage_text", "qrels_of", "queries_of", "read_corpus", "read_json_lines", "screen_documents",
    "sentence_starts", "sha256_text", "split_queries", "split_windows", "splits_of",
]
