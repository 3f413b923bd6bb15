// A RocksDB file system that keeps each write-ahead log zero-filled ahead of what RocksDB has
// written to it, so that a group commit's fdatasync finds the file's size and block map as
// they were and writes only the log's new data and a cache flush.
//
// Why: every group commit appends to the log and fdatasyncs it. An append past the end of the
// file changes its size (and, in space RocksDB fallocated, turns unwritten blocks into
// written ones), so fdatasync must write the inode as well: a third synchronous I/O per
// commit on ext4 without a journal (this machine's), a journal commit with one. Measured here
// by `parley-store-bench --benchmark_filter=BM_synced_commit` (docs/performance.md, "The
// write-ahead log's fdatasync"): 98-103 µs of the committing thread's CPU per synced commit
// on the plain file system, 65-67 µs on this one. PostgreSQL zero-fills its WAL segments for
// the same reason (`wal_init_zero`). RocksDB's own answer, recycling log files, is switched off
// by RocksDB itself under the point-in-time recovery this store uses.
//
// Contract:
//  - Only write-ahead logs are wrapped: files created by NewWritableFile whose name is
//    digits then ".log" (RocksDB's WAL names; its info log is "LOG"). Every other file, and
//    every other call, goes to the base file system unchanged.
//  - The wrapped file writes RocksDB's bytes where RocksDB puts them (the base file writes at
//    its own offset, which the zeros do not move). Before an append comes within half a
//    chunk of the zero-filled end, one more chunk of zeros is written behind the end through
//    a second descriptor and made durable with its own fdatasync: one extra sync per chunk of
//    log (1 MiB: about 1.3 ms here), instead of an inode write in every commit.
//  - Chunks are whole 32 KiB blocks of RocksDB's log (the size is rounded up), and a fill
//    writes its chunk's last page first, so the file always ends on a block boundary or at
//    RocksDB's data, never 1-6 bytes into a block (which the log reader would report as a
//    truncated header), even when a killed process cuts a fill short.
//  - Durability never depends on the zeros: fdatasync makes whatever was written durable,
//    metadata included, whether or not the zeros came first. If writing the zeros fails (a
//    full disk, say), what the fill wrote is cut off, a warning is logged and the file goes on
//    as a plain log file; the append itself is not failed. An I/O error in the zeros'
//    writeback is the file's own, though: Linux reports it to every descriptor of the file,
//    so RocksDB's next sync fails too, and the store refuses writes until it recovers, as
//    after any failed log write.
//  - Close truncates the file to what RocksDB wrote. After a crash a log ends in zeros (the
//    last one, and older ones RocksDB had not closed yet), which RocksDB's log reader skips
//    as the padding of a preallocated file (a zero header is a kZeroType record of length 0).
//    A record torn by the crash, followed by zeros, fails its checksum, and point-in-time
//    recovery (RocksDB's default, and this store's) stops the replay there: the record was
//    never synced, so never acknowledged. Skipping zeros silently is safe because the store
//    syncs every commit, so at most one unsynced write is ever in the file; without a sync
//    per commit the store does not prefill (rocksdb_options::wal_prefill_bytes).
#pragma once

#include <rocksdb/file_system.h>

#include <cstdint>
#include <memory>
#include <string_view>

namespace parley::store {

// Is `path`'s last component a RocksDB write-ahead log's name (digits, then ".log")?
bool is_wal_file_name(std::string_view path);

// `base` with its write-ahead logs zero-filled `chunk_bytes` at a time, rounded up to whole
// 32 KiB log blocks (0: not at all).
std::shared_ptr<rocksdb::FileSystem> make_wal_prefill_file_system(
    const std::shared_ptr<rocksdb::FileSystem>& base, std::uint64_t chunk_bytes);

}  // namespace parley::store
