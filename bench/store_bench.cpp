// Google Benchmark of the embedded store's writer, the component parley-bench's profile shows
// as the busiest thread. Each message is the full 1:1 cycle the server runs: send (appended to
// the chat's log), the recipient's ack of it (its delivery cursor moves; the sender's devices
// get a watermark receipt, which needs no ack). Every message is acked on its own, as a
// recipient that reads one message at a time does: the most acks a message can cost.
//
// BM_raw_rocksdb_batches is the baseline for the same run: RocksDB alone committing batches of
// the same shape (the same puts and deletes per message), without any of parley's logic.
// Report store / raw as a ratio, not absolute numbers. fsync is off in both: this measures
// CPU, not the disk.
//
// BM_synced_commit is the one with fsync on: a group commit as the server makes it (a synced
// RocksDB write of one small batch), on the plain file system (argument 0) and on the one
// that keeps the write-ahead log zero-filled ahead (store/rocksdb/wal_prefill.hpp; argument:
// the chunk). Its CPU time is the committing thread's, the fdatasync's kernel work included;
// report prefilled / plain, for CPU and for real time.
#include <benchmark/benchmark.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>

#include <filesystem>
#include <future>
#include <random>

#include "common/big_endian.hpp"
#include "store/rocksdb/rocksdb_store.hpp"
#include "store/rocksdb/wal_prefill.hpp"

namespace {

namespace fs = std::filesystem;
using namespace parley::store;

constexpr int batch = 256;  // messages in flight, as a busy server would have

fs::path temp_dir(const char* name) {
  std::random_device rd;
  auto p = fs::temp_directory_path() / (std::string(name) + std::to_string(rd()));
  fs::remove_all(p);
  return p;
}

template <class T, class Call>
T wait(Call call) {
  std::promise<result<T>> p;
  auto f = p.get_future();
  call([&p](result<T> r) { p.set_value(std::move(r)); });
  return std::move(*f.get());
}

void BM_store_message_cycle(benchmark::State& state) {
  const auto dir = temp_dir("parley_store_bench_");
  {
    rocksdb_options o;
    o.path = dir;
    o.sync = false;
    rocksdb_store store(o);
    const auto alice = wait<registration>([&](auto done) {
      store.register_account({"alice", {}}, done);
    });
    const auto bob = wait<registration>([&](auto done) {
      store.register_account({"bob", {}}, done);
    });
    const std::string payload(100, 'x');
    std::uint64_t n = 0;
    for (auto _ : state) {
      // Submit a batch of sends, then the acks, each wave in flight together so that group
      // commit works as it does under load.
      std::vector<std::promise<result<send_outcome>>> sent(batch);
      for (int i = 0; i < batch; ++i) {
        send_request request;
        request.sender = alice.user;
        request.sender_device = alice.device;
        request.sender_name = "alice";
        request.to.peer = "bob";
        request.client_msg_id = std::to_string(++n);
        request.payload = payload;
        request.cipher_type = 2;  // a SignalMessage; the store passes it on as is
        store.send(std::move(request),
                   [&sent, i](result<send_outcome> r) { sent[i].set_value(std::move(r)); });
      }
      std::vector<cursor_update> cursors;
      for (auto& s : sent) {
        const auto outcome = s.get_future().get();
        if (!outcome) {
          state.SkipWithError("send failed");
          return;
        }
        cursors.push_back({outcome->chat, outcome->seq});
      }
      std::vector<std::promise<result<watermark_moves>>> acked(batch);
      for (int i = 0; i < batch; ++i) {
        store.ack(bob.device, bob.user, {cursors[static_cast<std::size_t>(i)]},
                  [&acked, i](result<watermark_moves> r) {
                    acked[i].set_value(std::move(r));
                  });
      }
      for (auto& a : acked) {
        if (!a.get_future().get()) {
          state.SkipWithError("ack failed");
          return;
        }
      }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * batch);
  }
  fs::remove_all(dir);
}
BENCHMARK(BM_store_message_cycle)->Unit(benchmark::kMillisecond)->UseRealTime();

// RocksDB alone at `dir` on `env` (null: the default one), or null if it cannot be opened.
std::unique_ptr<rocksdb::DB> open_raw(const fs::path& dir, rocksdb::Env* env = nullptr) {
  rocksdb::Options options;
  options.create_if_missing = true;
  if (env != nullptr) options.env = env;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir.string(), &raw).ok()) return nullptr;
  return std::unique_ptr<rocksdb::DB>(raw);
}

// A key of the store's shape (store/rocksdb/keys.hpp): a tag, then a be64.
std::string key(char tag, std::uint64_t v) {
  std::string k(1, tag);
  parley::append_be64(k, v);
  return k;
}

void BM_raw_rocksdb_batches(benchmark::State& state) {
  const auto dir = temp_dir("parley_raw_bench_");
  {
    auto db = open_raw(dir);
    if (!db) {
      state.SkipWithError("cannot open RocksDB");
      return;
    }
    rocksdb::WriteOptions wo;
    const std::string message(160, 'm'), small(24, 's');
    std::uint64_t n = 0;
    for (auto _ : state) {
      // Per message, what the store writes (store/rocksdb/keys.hpp): the log entry and its
      // dedupe record; then the recipient's cursor (the store checks acks against its cached
      // chat heads and cursors, so no read here). One batch per wave, as group commit does.
      rocksdb::WriteBatch sends, acks;
      const std::uint64_t first = n;
      for (int i = 0; i < batch; ++i, ++n) {
        sends.Put(key('m', n), message);
        sends.Put(key('d', n), small);
      }
      db->Write(wo, &sends);
      for (std::uint64_t m = first; m < n; ++m) acks.Put(key('c', 1), key('s', m));
      db->Write(wo, &acks);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * batch);
  }
  fs::remove_all(dir);
}
BENCHMARK(BM_raw_rocksdb_batches)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_synced_commit(benchmark::State& state) {
  const auto dir = temp_dir("parley_synced_bench_");
  {
    auto env = rocksdb::NewCompositeEnv(make_wal_prefill_file_system(
        rocksdb::FileSystem::Default(), static_cast<std::uint64_t>(state.range(0))));
    auto db = open_raw(dir, env.get());
    if (!db) {
      state.SkipWithError("cannot open RocksDB");
      return;
    }
    rocksdb::WriteOptions synced;
    synced.sync = true;
    const std::string message(160, 'm'), small(24, 's');
    std::uint64_t n = 0;
    for (auto _ : state) {
      // Three messages' log entries and dedupe records: about a group commit's worth at
      // 3,000 msg/s in parley-bench's one-to-one scenario (~1,800 commits/s).
      rocksdb::WriteBatch group;
      for (int i = 0; i < 3; ++i, ++n) {
        group.Put(key('m', n), message);
        group.Put(key('d', n), small);
      }
      if (!db->Write(synced, &group).ok()) {
        state.SkipWithError("write failed");
        return;
      }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  }
  fs::remove_all(dir);
}
BENCHMARK(BM_synced_commit)->Arg(0)->Arg(1 << 20)->MinTime(3.0)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
