#include "media/local/local_blob_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "common/posix_file.hpp"
#include "common/log.hpp"

namespace parley::media {
namespace {

using posix::fd_guard;

namespace fs = std::filesystem;


[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// mkdir `dir` with 0700 unless it exists (as a directory).
void make_private_dir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw_errno("cannot create " + dir.string());
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw_errno("cannot stat " + dir.string());
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error(dir.string() + " is not a directory");
}

// Creates root (and its parents) and root/blobs; returns root/blobs.
fs::path prepare_root(const fs::path& root) {
  if (root.empty()) throw std::runtime_error("media store: no root directory given");
  if (root.has_parent_path()) fs::create_directories(root.parent_path());
  make_private_dir(root);
  fs::path blobs = root / "blobs";
  make_private_dir(blobs);
  return blobs;
}

std::string checked_public_url(std::string url) {
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    throw std::runtime_error(
        "media store: the public URL must start with http:// or https://, "
        "got '" +
        url + "'");
  }
  while (url.ends_with('/')) url.pop_back();
  return url;
}

bool write_all(int fd, const unsigned char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

void fsync_dir(const fs::path& dir) {
  fd_guard d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.valid()) ::fsync(d.get());
}

// Reads root/url.key, which must hold exactly key_bytes bytes.
std::optional<blob_url_signer::url_key> read_key(const fs::path& file) {
  fd_guard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("cannot open " + file.string());
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + file.string());
  if (!S_ISREG(st.st_mode) || st.st_size != static_cast<off_t>(blob_url_signer::key_bytes)) {
    throw std::runtime_error(file.string() + " holds " + std::to_string(st.st_size) +
                             " bytes, not " + std::to_string(blob_url_signer::key_bytes) +
                             ": refusing to start (restore the file, or delete it to make a new "
                             "key, which invalidates every media URL handed out)");
  }
  if ((st.st_mode & 077) != 0) {
    log_warn() << file.string() << " is readable by others than its owner (mode " << std::oct
               << (st.st_mode & 0777) << std::dec << "); chmod 600 it";
  }
  blob_url_signer::url_key key{};
  std::size_t got = 0;
  while (got < key.size()) {
    const ssize_t n = ::read(fd.get(), key.data() + got, key.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("cannot read " + file.string());
    got += static_cast<std::size_t>(n);
  }
  return key;
}

// Writes a fresh key next to `file`, then links it into place, so that a crash never leaves a
// short key behind and two processes starting at once end up with the same key.
blob_url_signer::url_key create_key(const fs::path& file) {
  blob_url_signer::url_key key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1)
    throw std::runtime_error("media store: the random generator failed");
  const fs::path temp = file.string() + ".new";
  ::unlink(temp.c_str());
  {
    fd_guard fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) throw_errno("cannot create " + temp.string());
    if (!write_all(fd.get(), key.data(), key.size()) || ::fsync(fd.get()) != 0 || !fd.close())
      throw_errno("cannot write " + temp.string());
  }
  const bool linked = ::link(temp.c_str(), file.c_str()) == 0;
  const int link_errno = errno;
  ::unlink(temp.c_str());
  if (!linked) {
    OPENSSL_cleanse(key.data(), key.size());
    if (link_errno == EEXIST) {
      if (auto other = read_key(file)) return *other;  // another process made it first
    }
    errno = link_errno;
    throw_errno("cannot create " + file.string());
  }
  fsync_dir(file.parent_path());
  log_info() << "media store: created a new URL key in " << file.string();
  return key;
}

blob_url_signer::url_key load_or_create_key(const fs::path& root) {
  const fs::path file = root / "url.key";
  if (auto key = read_key(file)) return *key;
  return create_key(file);
}

// The key lives in the signer only: wipe the copy the constructor passes through.
struct wiped_key {
  blob_url_signer::url_key key;
  ~wiped_key() { OPENSSL_cleanse(key.data(), key.size()); }
};

bool unlink_if_there(const fs::path& file) {
  if (::unlink(file.c_str()) == 0 || errno == ENOENT) return true;
  log_warn() << "media store: cannot delete " << file.string() << ": " << std::strerror(errno);
  return false;
}

bool lower_hex_pair(std::string_view s) {
  return s.size() == 2 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

local_blob_store::local_blob_store(fs::path root)
    : root_(std::move(root)),
      blobs_(prepare_root(root_)),
      signer_(wiped_key{load_or_create_key(root_)}.key) {}

local_blob_store::local_blob_store(fs::path root, std::string public_url)
    : local_blob_store(std::move(root)) {
  set_public_url(std::move(public_url));
}

void local_blob_store::set_public_url(std::string public_url) {
  std::string checked = checked_public_url(std::move(public_url));
  std::lock_guard lock(public_url_mutex_);
  public_url_ = std::move(checked);
}

std::string local_blob_store::upload_url(const upload_grant& grant) {
  std::string target = signer_.upload_target(grant);
  std::lock_guard lock(public_url_mutex_);
  return public_url_ + target;
}

std::string local_blob_store::multipart_start_url(const upload_grant& /*grant*/) { return {}; }

std::optional<multipart_urls> local_blob_store::multipart_part_urls(
    const upload_grant& /*grant*/, std::string_view /*upload_id*/) {
  return std::nullopt;
}

std::string local_blob_store::download_url(const blob_id& id, std::uint64_t user,
                                           wall_clock::time_point expires) {
  std::string target = signer_.download_target(id, user, expires);
  std::lock_guard lock(public_url_mutex_);
  return public_url_ + target;
}

std::optional<local_blob_store::blob_files> local_blob_store::files_of(std::string_view id) const {
  if (!valid_blob_id(id)) return std::nullopt;
  blob_files f;
  f.dir = blobs_ / std::string(id.substr(0, 2));
  f.complete = f.dir / std::string(id);
  f.partial = f.dir / (std::string(id) + std::string(partial_suffix));
  return f;
}

bool local_blob_store::remove(const blob_id& id, std::string_view /*upload_id: none here*/) {
  const auto files = files_of(id);
  if (!files) return true;  // no file can have that name
  const bool partial_gone = unlink_if_there(files->partial);
  const bool complete_gone = unlink_if_there(files->complete);
  return partial_gone && complete_gone;
}

std::vector<blob_id> local_blob_store::written_before(wall_clock::time_point before) {
  std::vector<blob_id> out;
  std::error_code ec;
  for (fs::directory_iterator dirs(blobs_, ec), end; !ec && dirs != end; dirs.increment(ec)) {
    const std::string prefix = dirs->path().filename().string();
    std::error_code type_ec;
    if (!lower_hex_pair(prefix) || !dirs->is_directory(type_ec)) continue;
    DIR* d = ::opendir(dirs->path().c_str());
    if (d == nullptr) {
      log_warn() << "media store: cannot list " << dirs->path().string() << ": "
                 << std::strerror(errno);
      continue;
    }
    while (const dirent* e = ::readdir(d)) {
      std::string_view name(e->d_name);
      if (name.ends_with(partial_suffix)) name.remove_suffix(partial_suffix.size());
      if (!valid_blob_id(name) || name.substr(0, 2) != prefix) continue;
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        continue;
      const auto mtime = wall_clock::time_point(std::chrono::duration_cast<wall_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
      if (mtime < before) out.emplace_back(name);
    }
    ::closedir(d);
  }
  if (ec) log_warn() << "media store: cannot list " << blobs_.string() << ": " << ec.message();
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace parley::media
