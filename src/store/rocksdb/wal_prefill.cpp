#include "store/rocksdb/wal_prefill.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "common/log.hpp"

namespace parley::store {

bool is_wal_file_name(std::string_view path) {
  const auto slash = path.find_last_of('/');
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  constexpr std::string_view suffix = ".log";
  if (name.size() <= suffix.size() || !name.ends_with(suffix)) return false;
  const std::string_view digits = name.substr(0, name.size() - suffix.size());
  return std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

namespace {

constexpr std::uint64_t log_block = 32 * 1024;  // RocksDB's log::kBlockSize
constexpr std::uint64_t page = 4 * 1024;

// One write-ahead log: RocksDB's bytes go to the base file; zeros go ahead of them through
// a descriptor of this file's own (wal_prefill.hpp has the contract).
class prefilled_wal final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  prefilled_wal(std::unique_ptr<rocksdb::FSWritableFile> base, std::string name, int fd,
                std::uint64_t chunk)
      : rocksdb::FSWritableFileOwnerWrapper(std::move(base)),
        name_(std::move(name)),
        fd_(fd),
        chunk_(chunk) {}

  prefilled_wal(const prefilled_wal&) = delete;
  prefilled_wal& operator=(const prefilled_wal&) = delete;

  ~prefilled_wal() override { close_own(); }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    fill_ahead(written_ + data.size());
    auto s = target()->Append(data, options, dbg);
    if (s.ok()) written_ += data.size();
    return s;
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& verification,
                           rocksdb::IODebugContext* dbg) override {
    fill_ahead(written_ + data.size());
    auto s = target()->Append(data, options, verification, dbg);
    if (s.ok()) written_ += data.size();
    return s;
  }

  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override {
    fill_ahead(offset + data.size());
    auto s = target()->PositionedAppend(data, offset, options, dbg);
    if (s.ok()) written_ = std::max<std::uint64_t>(written_, offset + data.size());
    return s;
  }

  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& verification,
                                     rocksdb::IODebugContext* dbg) override {
    fill_ahead(offset + data.size());
    auto s = target()->PositionedAppend(data, offset, options, verification, dbg);
    if (s.ok()) written_ = std::max<std::uint64_t>(written_, offset + data.size());
    return s;
  }

  rocksdb::IOStatus Truncate(std::uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    auto s = target()->Truncate(size, options, dbg);
    if (s.ok()) {
      written_ = size;
      filled_ = std::min(filled_, size);
      zeroed_ = std::min(zeroed_, size);
    }
    return s;
  }

  // The zeros behind RocksDB's last byte (a failed fill's too) are cut off, so that a log
  // closed cleanly ends where its data does. A failed cut leaves zeros, which a reader skips: the
  // close goes on.
  rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (zeroed_ > written_) (void)target()->Truncate(written_, options, dbg);
    close_own();
    return target()->Close(options, dbg);
  }

 private:
  // Zero-fill, chunk by chunk, until `end` (the end of the write about to be made) is at least
  // half a chunk short of the filled end. Stops for good at the first error, cutting off what
  // the failed fill wrote: the file then ends at `filled_`, a whole number of RocksDB's log
  // blocks, never below RocksDB's data (written_ <= filled_ while prefilling).
  void fill_ahead(std::uint64_t end) {
    if (fd_ < 0) return;
    while (end + chunk_ / 2 > filled_) {
      zeroed_ = std::max(zeroed_, filled_ + chunk_);
      if (!fill_chunk(filled_) || ::fdatasync(fd_) != 0) {
        const int error = errno;
        (void)::ftruncate(fd_, static_cast<off_t>(filled_));
        log_warn() << "store: stopped zero-filling the write-ahead log " << name_
                   << " ahead of its data (" << std::strerror(error)
                   << "); its commits sync its size from here on";
        close_own();
        return;
      }
      filled_ += chunk_;
    }
  }

  // The chunk's last page first, so that the file's size moves from one log-block boundary to
  // the next in one page's write (a write that a killed process may cut short, it cuts between
  // pages), then the rest, which the size already covers.
  bool fill_chunk(std::uint64_t offset) const {
    return write_zeros(offset + chunk_ - page, page) && write_zeros(offset, chunk_ - page);
  }

  bool write_zeros(std::uint64_t offset, std::uint64_t length) const {
    static constexpr std::array<char, 64 * 1024> zeros{};
    while (length > 0) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(length, zeros.size()));
      const auto w = ::pwrite(fd_, zeros.data(), n, static_cast<off_t>(offset));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        if (w == 0) errno = EIO;
        return false;
      }
      offset += static_cast<std::uint64_t>(w);
      length -= static_cast<std::uint64_t>(w);
    }
    return true;
  }

  void close_own() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string name_;           // for the log line when prefilling stops
  int fd_;                     // the zeros' descriptor; -1 once prefilling stopped
  std::uint64_t chunk_;        // bytes of zeros per fill
  std::uint64_t written_ = 0;  // RocksDB's bytes (the base file's offset)
  std::uint64_t filled_ = 0;   // the file holds data or zeros up to here
  std::uint64_t zeroed_ = 0;   // zeros may have been written up to here (a failed fill too)
};

class wal_prefill_file_system final : public rocksdb::FileSystemWrapper {
 public:
  // The chunk is a whole number of RocksDB's log blocks, so that a log whose fill was cut
  // short ends on a block boundary, never 1-6 bytes into a block (which the log reader would
  // report as a truncated header).
  wal_prefill_file_system(const std::shared_ptr<rocksdb::FileSystem>& base, std::uint64_t chunk)
      : rocksdb::FileSystemWrapper(base), chunk_((chunk + log_block - 1) / log_block * log_block) {}

  const char* Name() const override { return "parley_wal_prefill"; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewWritableFile(name, options, result, dbg);
    if (!s.ok() || chunk_ == 0 || options.use_direct_writes || options.use_mmap_writes ||
        !is_wal_file_name(name))
      return s;
    // Without a descriptor of its own the log is a plain one: prefilling is only a speed-up.
    const int fd = ::open(name.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return s;
    try {
      *result = std::make_unique<prefilled_wal>(std::move(*result), name, fd, chunk_);
    } catch (...) {
      ::close(fd);
      throw;
    }
    return s;
  }

 private:
  std::uint64_t chunk_;
};

}  // namespace

std::shared_ptr<rocksdb::FileSystem> make_wal_prefill_file_system(
    const std::shared_ptr<rocksdb::FileSystem>& base, std::uint64_t chunk_bytes) {
  return std::make_shared<wal_prefill_file_system>(base, chunk_bytes);
}

}  // namespace parley::store
