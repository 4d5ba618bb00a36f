"""Data layer: sources -> documents -> tokenized, memory-mapped, cached shards per domain."""
from midsweep.config.data import BUILTIN_CORPORA, DataConfig, SourceConfig
from midsweep.data.corpora import ensure_corpus, read_corpus
from midsweep.data.shards import PREPROCESS_VERSION, DomainData, TokenSplit, prepare_domain, prepare_domains
from midsweep.data.sources import DataSourceError, Document, iter_documents
from midsweep.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "BUILTIN_CORPORA", "DataConfig", "SourceConfig", "ensure_corpus", "read_corpus", "PREPROCESS_VERSION",
    "DomainData", "TokenSplit", "prepare_domain", "prepare_domains", "DataSourceError", "Document",
    "iter_documents", "ByteTokenizer", "HFTokenizer", "Tokenizer", "load_tokenizer",
]
