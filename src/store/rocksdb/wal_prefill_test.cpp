// The write-ahead log's zero-fill (wal_prefill.hpp): which files it touches, that RocksDB's
// bytes land where RocksDB puts them with zeros ahead of them, that a clean close cuts the
// zeros off, and that a log left with zeros by a crash (whole, or with its last record torn)
// is replayed up to its last whole record.
#include "store/rocksdb/wal_prefill.hpp"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace parley::store {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t chunk = 64 * 1024;

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A new file through `file_system`, or null if it could not be made.
std::unique_ptr<rocksdb::FSWritableFile> create_file(rocksdb::FileSystem& file_system,
                                                     const fs::path& path) {
  std::unique_ptr<rocksdb::FSWritableFile> file;
  if (!file_system.NewWritableFile(path.string(), rocksdb::FileOptions(), &file, nullptr).ok())
    return nullptr;
  return file;
}

std::vector<fs::path> wal_files(const fs::path& dir) {
  std::vector<fs::path> logs;
  for (const auto& e : fs::directory_iterator(dir))
    if (is_wal_file_name(e.path().string())) logs.push_back(e.path());
  std::sort(logs.begin(), logs.end());
  return logs;
}

TEST(wal_prefill, only_write_ahead_log_names_are_logs) {
  EXPECT_TRUE(is_wal_file_name("000012.log"));
  EXPECT_TRUE(is_wal_file_name("/var/lib/parley/store/000012.log"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/LOG")) << "RocksDB's info log";
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/LOG.old.1700000000"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/MANIFEST-000005"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/000013.sst"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/.log"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/store/a00012.log"));
  EXPECT_FALSE(is_wal_file_name("/var/lib/parley/000012.log/CURRENT"));
}

TEST(wal_prefill, a_log_is_zero_filled_ahead_of_its_data_and_cut_back_on_close) {
  test_support::temp_dir dir("parley_wal_prefill_");
  auto file_system = make_wal_prefill_file_system(rocksdb::FileSystem::Default(), chunk);
  const auto path = dir.path() / "000007.log";
  auto file = create_file(*file_system, path);
  ASSERT_NE(file, nullptr);

  std::string expected = "first record";
  ASSERT_TRUE(file->Append(expected, rocksdb::IOOptions(), nullptr).ok());
  EXPECT_EQ(fs::file_size(path), chunk) << "one chunk of zeros ahead of the first append";
  EXPECT_EQ(file->GetFileSize(rocksdb::IOOptions(), nullptr), expected.size())
      << "RocksDB sees its own bytes only";
  auto on_disk = read_all(path);
  EXPECT_EQ(on_disk.substr(0, expected.size()), expected);
  EXPECT_TRUE(std::all_of(on_disk.begin() + static_cast<std::ptrdiff_t>(expected.size()),
                          on_disk.end(), [](char c) { return c == 0; }));

  // Past half a chunk short of the filled end, the next chunk is filled before the append.
  const std::string big(chunk / 2, 'x');
  ASSERT_TRUE(file->Append(big, rocksdb::IOOptions(), nullptr).ok());
  expected += big;
  EXPECT_EQ(fs::file_size(path), 2 * chunk);
  ASSERT_TRUE(file->Sync(rocksdb::IOOptions(), nullptr).ok());
  on_disk = read_all(path);
  EXPECT_EQ(on_disk.substr(0, expected.size()), expected) << "appends land at RocksDB's offsets";

  ASSERT_TRUE(file->Close(rocksdb::IOOptions(), nullptr).ok());
  EXPECT_EQ(read_all(path), expected) << "the zeros are cut off by a clean close";
}

// The zeros are a speed-up only: when they cannot be written (here the file-size limit stands
// in for a full disk), the log goes on as a plain file, ending at its last whole chunk of
// zeros, and no append fails.
TEST(wal_prefill, a_failed_fill_stops_the_prefill_and_fails_no_append) {
  test_support::temp_dir dir("parley_wal_prefill_");
  auto file_system = make_wal_prefill_file_system(rocksdb::FileSystem::Default(), chunk);
  const auto path = dir.path() / "000008.log";
  auto file = create_file(*file_system, path);
  ASSERT_NE(file, nullptr);

  // Writes past 1.5 chunks fail (EFBIG, with SIGXFSZ ignored) until the limit is restored.
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = old_limit;
  limited.rlim_cur = chunk + chunk / 2;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  std::string expected = "first";
  bool appended = file->Append(expected, rocksdb::IOOptions(), nullptr).ok();
  const auto size_after_first = fs::file_size(path);
  // Needs the second chunk, which the limit cuts short: the fill fails, the append does not.
  const std::string more(chunk / 2 + 100, 'y');
  appended = appended && file->Append(more, rocksdb::IOOptions(), nullptr).ok();
  expected += more;
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(appended);
  EXPECT_EQ(size_after_first, chunk);
  EXPECT_EQ(fs::file_size(path), chunk)
      << "the failed fill leaves the file at the last whole chunk (its last page, written "
         "first, was refused; anything it wrote is cut off)";
  // No fill after the failed one, though this append would call for one and the limit is gone.
  const std::string after(40'000, 'z');
  ASSERT_TRUE(file->Append(after, rocksdb::IOOptions(), nullptr).ok());
  expected += after;
  ASSERT_GT(expected.size(), chunk);
  EXPECT_EQ(fs::file_size(path), expected.size()) << "no zeros past the data";
  ASSERT_TRUE(file->Close(rocksdb::IOOptions(), nullptr).ok());
  EXPECT_EQ(read_all(path), expected);
}

// A chunk is rounded up to whole 32 KiB blocks of RocksDB's log, so that a log always ends on
// a block boundary or at RocksDB's data.
TEST(wal_prefill, a_chunk_is_a_whole_number_of_log_blocks) {
  test_support::temp_dir dir("parley_wal_prefill_");
  auto file_system = make_wal_prefill_file_system(rocksdb::FileSystem::Default(), 40'000);
  const auto path = dir.path() / "000010.log";
  auto file = create_file(*file_system, path);
  ASSERT_NE(file, nullptr);
  ASSERT_TRUE(file->Append("abc", rocksdb::IOOptions(), nullptr).ok());
  EXPECT_EQ(fs::file_size(path), 64u * 1024);
  ASSERT_TRUE(file->Close(rocksdb::IOOptions(), nullptr).ok());
}

TEST(wal_prefill, other_files_are_written_as_they_are) {
  test_support::temp_dir dir("parley_wal_prefill_");
  auto file_system = make_wal_prefill_file_system(rocksdb::FileSystem::Default(), chunk);
  for (const char* name : {"MANIFEST-000001", "LOG", "000009.sst"}) {
    const auto path = dir.path() / name;
    auto file = create_file(*file_system, path);
    ASSERT_NE(file, nullptr);
    ASSERT_TRUE(file->Append("abc", rocksdb::IOOptions(), nullptr).ok());
    ASSERT_TRUE(file->Sync(rocksdb::IOOptions(), nullptr).ok());
    EXPECT_EQ(fs::file_size(path), 3u) << name;
    ASSERT_TRUE(file->Close(rocksdb::IOOptions(), nullptr).ok());
  }
}

// A database on the zero-filling file system; `copy_of` copies its directory while it is
// open, as a crash would leave it (every write below is synced, so the copy holds them).
struct crashed_database {
  test_support::temp_dir live{"parley_wal_prefill_live_"};
  test_support::temp_dir crashed{"parley_wal_prefill_crashed_"};
  std::unique_ptr<rocksdb::Env> env =
      rocksdb::NewCompositeEnv(make_wal_prefill_file_system(rocksdb::FileSystem::Default(), chunk));
  std::unique_ptr<rocksdb::DB> db;

  crashed_database() {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.env = env.get();
    rocksdb::DB* raw = nullptr;
    if (!rocksdb::DB::Open(options, live.path().string(), &raw).ok())
      throw std::runtime_error("cannot open the test database");
    db.reset(raw);
  }

  void put(const std::string& key, const std::string& value) {
    rocksdb::WriteOptions synced;
    synced.sync = true;
    if (!db->Put(synced, key, value).ok()) throw std::runtime_error("put failed");
  }

  void crash() {
    for (const auto& e : fs::directory_iterator(live.path()))
      if (e.path().filename() != "LOCK")
        fs::copy_file(e.path(), crashed.path() / e.path().filename());
  }

  // Opens the crashed copy (on the plain file system: what it reads must not depend on the
  // wrapper) and returns the values of `keys`, "" for a missing one.
  std::vector<std::string> recover(const std::vector<std::string>& keys) {
    rocksdb::Options options;  // point-in-time recovery, RocksDB's default and the store's
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(options, crashed.path().string(), &raw);
    if (!s.ok()) throw std::runtime_error("recovery failed: " + s.ToString());
    std::unique_ptr<rocksdb::DB> recovered(raw);
    std::vector<std::string> values;
    for (const auto& k : keys) {
      std::string v;
      values.push_back(recovered->Get(rocksdb::ReadOptions(), k, &v).ok() ? v : "");
    }
    return values;
  }
};

TEST(wal_prefill, a_log_left_with_zeros_by_a_crash_replays_every_synced_write) {
  crashed_database d;
  std::vector<std::string> keys, values;
  for (int i = 0; i < 100; ++i) {
    keys.push_back("key" + std::to_string(i));
    values.push_back(std::string(100, static_cast<char>('a' + i % 26)));
    d.put(keys.back(), values.back());
  }
  d.crash();
  const auto logs = wal_files(d.crashed.path());
  ASSERT_EQ(logs.size(), 1u);
  const auto bytes = read_all(logs.front());
  ASSERT_EQ(bytes.size() % chunk, 0u) << "the crashed log still has its zeros";
  ASSERT_EQ(bytes.back(), 0) << "the crashed log ends in zeros";
  EXPECT_EQ(d.recover(keys), values);
}

TEST(wal_prefill, a_record_torn_before_the_zeros_is_dropped_and_the_rest_replays) {
  crashed_database d;
  d.put("before", "kept");
  d.put("torn", std::string(2000, 'x'));
  d.crash();
  const auto logs = wal_files(d.crashed.path());
  ASSERT_EQ(logs.size(), 1u);
  auto bytes = read_all(logs.front());
  // The last record ends with the torn value's last 'x'; its second half never reached the
  // disk: zeros, as the file held there before.
  const auto end = bytes.find_last_not_of('\0');
  ASSERT_NE(end, std::string::npos);
  ASSERT_EQ(bytes[end], 'x');
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(end + 1 - 1000),
            bytes.begin() + static_cast<std::ptrdiff_t>(end + 1), '\0');
  write_all(logs.front(), bytes);
  EXPECT_EQ(d.recover({"before", "torn"}), (std::vector<std::string>{"kept", ""}));
}

// A crash in the middle of a fill: the fill writes its chunk's last page first, so the log is
// left either at its last whole chunk (nothing of the fill written) or at the new chunk's end,
// with zeros (or holes, which read as zeros) between RocksDB's data and it. Both replay every
// synced write.
TEST(wal_prefill, a_fill_cut_short_by_a_crash_leaves_a_log_that_replays) {
  crashed_database d;
  std::vector<std::string> keys, values;
  // Past half the first chunk: the second fill has run (the live log is two chunks long).
  for (int i = 0; fs::file_size(wal_files(d.live.path()).front()) < 2 * chunk; ++i) {
    ASSERT_LT(i, 10'000);
    keys.push_back("key" + std::to_string(i));
    values.push_back(std::string(200, static_cast<char>('a' + i % 26)));
    d.put(keys.back(), values.back());
  }
  d.crash();
  const auto log = wal_files(d.crashed.path()).front();
  const auto data_end = read_all(log).find_last_not_of('\0') + 1;
  ASSERT_LT(data_end, chunk) << "the records fit the first chunk";
  ASSERT_GT(data_end, chunk / 2);
  // Nothing of the second fill reached the disk.
  fs::resize_file(log, chunk);
  EXPECT_EQ(d.recover(keys), values) << "cut at the first chunk's end";
  // Only its last page did: the rest of the chunk a hole.
  fs::remove_all(d.crashed.path());
  fs::create_directories(d.crashed.path());
  d.crash();
  fs::resize_file(log, chunk);
  fs::resize_file(log, 2 * chunk);
  {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(2 * chunk - 4096));
    const std::string page(4096, '\0');
    f.write(page.data(), static_cast<std::streamsize>(page.size()));
  }
  EXPECT_EQ(d.recover(keys), values) << "cut after the second chunk's last page";
}

}  // namespace
}  // namespace parley::store
