#include "client/media_files.hpp"

#include <openssl/rand.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <thread>

#include "client/blob_transfer.hpp"
#include "client/profile.hpp"
#include "common/clock.hpp"
#include "media/blob_store.hpp"
#include "media/chunked_cipher.hpp"
#include "parley/client/v1/local.pb.h"

namespace parley::client {
namespace asio = boost::asio;
namespace content = parley::content::v1;
using asio::awaitable;

namespace {

client_error local_error(std::string what) {
  return {client_error::kind::local, parley::v2::ERROR_CODE_UNSPECIFIED, std::move(what)};
}

// Runs the blocking `work` on a thread of its own; the coroutine polls for it (every 20 ms), so
// that the caller's io_context keeps serving the connection meanwhile.
template <class Work>
awaitable<std::invoke_result_t<Work>> off_thread(Work work) {
  using out_type = std::invoke_result_t<Work>;
  std::optional<out_type> out;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    out.emplace(work());
    done.store(true, std::memory_order_release);
  });
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!done.load(std::memory_order_acquire)) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  worker.join();
  co_return std::move(*out);
}

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

std::string random_name() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no randomness available");
  return to_hex(std::string(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

template <std::size_t n>
std::string as_bytes(const std::array<std::uint8_t, n>& a) {
  return {reinterpret_cast<const char*>(a.data()), a.size()};
}

// A slot's URL is used only while it has this much time left: an upload started just before
// the expiry would be refused halfway.
constexpr std::uint64_t url_margin_ms = 30'000;

std::string human_size(std::uint64_t bytes) {
  char buf[32];
  if (bytes < 1000) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < 1000ull * 1000) {
    std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(bytes) / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  }
  return buf;
}

// Control characters and DEL shown as '?': a name comes from the sender and is shown as is.
std::string shown_name(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

}  // namespace

std::string mime_type_of(const std::filesystem::path& name) {
  std::string ext = name.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::pair<const char*, const char*> known[] = {
      {".jpg", "image/jpeg"},  {".jpeg", "image/jpeg"}, {".png", "image/png"},
      {".gif", "image/gif"},   {".webp", "image/webp"}, {".mp4", "video/mp4"},
      {".mov", "video/quicktime"}, {".webm", "video/webm"}, {".ogg", "audio/ogg"},
      {".opus", "audio/ogg"},  {".mp3", "audio/mpeg"}, {".m4a", "audio/mp4"},
      {".wav", "audio/wav"},   {".pdf", "application/pdf"}, {".txt", "text/plain"},
      {".zip", "application/zip"},
  };
  for (const auto& [e, type] : known) {
    if (ext == e) return type;
  }
  return "application/octet-stream";
}

std::optional<std::string> media_problem(const content::Media& m) {
  // 32 lowercase hex digits (security.md): the id names the download's work file, so
  // anything else ("../..", "/home/...", a NUL) would let whoever sent it pick a path.
  if (!media::valid_blob_id(m.media_id())) return "a file message without a valid media id";
  if (m.key().size() != media::media_key_bytes) return "a file message with a bad key";
  if (m.sha256().size() != media::media_sha256_bytes) return "a file message with a bad hash";
  if (m.plain_size() > media::max_media_plain_bytes ||
      m.size() != media::ciphertext_size(m.plain_size())) {
    return "a file message whose sizes do not match";
  }
  return std::nullopt;
}

std::string describe_media(const content::Media& m) {
  std::string out;
  if (m.voice()) {
    out = "[voice note]";
    if (m.duration_ms() > 0) out += " " + std::to_string(m.duration_ms() / 1000) + " s";
  } else {
    out = "[file] " + shown_name(m.file_name().empty() ? "unnamed" : m.file_name()) + " (" +
          human_size(m.plain_size()) + ")";
  }
  if (!m.caption().empty()) out += ": " + m.caption();
  return out;
}

// GCC 12's -Wmismatched-new-delete on coroutine frames is wrong here (GCC bug 109224: it
// pairs Asio's awaitable_frame_base::operator delete with ::operator new inside Asio's
// recycling allocator, which is the pair Asio means).
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
awaitable<result<content::Media>> upload_file(client& api, local_store& store, file_to_send file,
                                              std::filesystem::path work_dir,
                                              transfer_progress progress) {
  std::error_code ec;
  const auto source = std::filesystem::absolute(file.path, ec);
  struct stat st {};
  if (ec || ::stat(source.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    co_return local_error("cannot read " + file.path.string() + ": not a regular file");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > media::max_media_plain_bytes) {
    co_return local_error(file.path.string() + " is " + human_size(size) +
                          "; files are limited to 100 MB");
  }

  parley::client::v1::UploadState state;
  try {
    auto kept = store.upload(source.string(), size, mtime_ns(st));
    if (kept && (!state.ParseFromString(*kept) ||
                 !std::filesystem::exists(state.cipher_path()))) {
      state.Clear();  // unreadable, or its encrypted copy is gone: start over
    }
  } catch (const std::exception& e) {
    co_return local_error(std::string("local store failed: ") + e.what());
  }

  if (!state.has_media()) {
    // A new upload: a fresh key, the encrypted copy, and its record (before any byte leaves).
    std::filesystem::create_directories(work_dir, ec);
    const auto key = media::new_media_key();
    const auto cipher_path = work_dir / (random_name() + ".enc");
    auto sealed = co_await off_thread(
        [&] { return media::encrypt_file(source, cipher_path, key); });
    if (!sealed) co_return local_error("cannot encrypt " + file.path.string() + ": " +
                                       sealed.error().message());
    auto& m = *state.mutable_media();
    m.set_key(as_bytes(key));
    m.set_sha256(as_bytes(sealed->sha256));
    m.set_size(sealed->size);
    m.set_plain_size(sealed->plain_size);
    m.set_mime_type(file.mime_type.empty() ? mime_type_of(source.filename())
                                           : file.mime_type);
    m.set_file_name(source.filename().string());
    state.set_cipher_path(cipher_path.string());
  }
  // How the message shows the file is this call's, also when an earlier attempt's upload is
  // resumed (its encrypted copy does not depend on it).
  state.mutable_media()->set_voice(file.voice);
  state.mutable_media()->set_caption(file.caption);

  const auto keep = [&]() -> std::optional<client_error> {
    try {
      store.put_upload(source.string(), size, mtime_ns(st), state.SerializeAsString());
      return std::nullopt;
    } catch (const std::exception& e) {
      return local_error(std::string("local store failed: ") + e.what());
    }
  };
  const std::filesystem::path cipher = state.cipher_path();
  const std::uint64_t cipher_size = state.media().size();
  for (int attempt = 0;; ++attempt) {
    // A multipart upload under way goes on with its own slot, expired or not: its parts'
    // URLs are asked for anew (RequestUploadParts) as long as the server keeps the record.
    if (state.upload_id().empty() &&
        (state.url().empty() || state.expires_at_ms() < now_ms() + url_margin_ms)) {
      auto slot = co_await api.request_upload(state.media().size(), state.media().sha256());
      if (!slot) co_return slot.error();
      state.mutable_media()->set_media_id(slot->media_id());
      state.set_url(slot->url());
      state.set_expires_at_ms(slot->expires_at_ms());
      state.set_multipart_url(slot->multipart_url());
      state.clear_part_etags();
    }
    if (auto failed = keep()) co_return *failed;
    const bool retry = attempt == 0;

    if (state.multipart_url().empty()) {
      const std::string url = state.url();
      auto sent =
          co_await off_thread([&] { return upload(url, cipher, progress, api.ca_file()); });
      if (sent) break;
      // A URL refused as expired or invalid: once more with a new slot (and a new media id).
      if (retry && sent.error().status == 403) {
        state.clear_url();
        continue;
      }
      co_return local_error("upload failed: " + describe(sent.error()));
    }

    // S3, in parts (docs/protocol.md, "Media"): start (once), then each part not stored yet,
    // recorded as it is, then the completion.
    if (state.upload_id().empty()) {
      const std::string url = state.multipart_url();
      auto started = co_await off_thread([&] { return start_multipart(url, api.ca_file()); });
      if (!started) {
        if (retry && started.error().status == 403) {
          state.clear_url();
          continue;
        }
        co_return local_error("upload failed: " + describe(started.error()));
      }
      state.set_upload_id(*started);
      if (auto failed = keep()) co_return *failed;
    }
    auto parts = co_await api.request_upload_parts(state.media().media_id(), state.upload_id());
    if (!parts && retry && parts.error().code == parley::v2::ERROR_CODE_MEDIA_NOT_FOUND) {
      // The slot's record was swept (a day without a send): all over again.
      state.clear_url();
      state.clear_upload_id();
      state.clear_part_etags();
      continue;
    }
    if (!parts) co_return parts.error();
    const auto count = static_cast<std::uint64_t>(parts->part_urls_size());
    if (parts->part_size() == 0 ||
        count != (cipher_size + parts->part_size() - 1) / parts->part_size()) {
      co_return local_error("the server's parts do not cover the file");
    }
    while (static_cast<std::uint64_t>(state.part_etags_size()) < count) state.add_part_etags();
    std::optional<transfer_error> part_failed;
    for (int i = 0; i < parts->part_urls_size() && !part_failed; ++i) {
      if (!state.part_etags(i).empty()) continue;
      const std::string url = parts->part_urls(i);
      const std::uint64_t first = static_cast<std::uint64_t>(i) * parts->part_size();
      const std::uint64_t last = std::min(cipher_size, first + parts->part_size());
      auto etag = co_await off_thread(
          [&] { return upload_part(url, cipher, first, last, progress, api.ca_file()); });
      if (!etag) {
        part_failed = etag.error();
        break;
      }
      state.set_part_etags(i, *etag);
      if (auto failed = keep()) co_return *failed;
    }
    if (!part_failed) {
      const std::string url = parts->complete_url();
      const std::vector<std::string> etags(state.part_etags().begin(), state.part_etags().end());
      auto done = co_await off_thread([&] { return complete_multipart(url, etags, api.ca_file()); });
      if (done) {
        if (progress) progress(cipher_size, cipher_size);
        break;
      }
      part_failed = done.error();
    }
    // The store no longer knows the upload (404 NoSuchUpload: aborted by its lifecycle rules,
    // or completed already with other parts): once more from its first part, on a new slot.
    if (retry && part_failed->status == 404) {
      state.clear_url();
      state.clear_upload_id();
      state.clear_part_etags();
      continue;
    }
    if (retry && part_failed->status == 403) continue;  // expired part URLs: ask anew
    co_return local_error("upload failed: " + describe(*part_failed));
  }
  co_return state.media();
}

void finish_upload(local_store& store, const std::filesystem::path& source) {
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(source, ec);
  struct stat st {};
  if (ec || ::stat(absolute.c_str(), &st) != 0) return;
  try {
    if (auto kept = store.upload(absolute.string(), static_cast<std::uint64_t>(st.st_size),
                                 mtime_ns(st))) {
      parley::client::v1::UploadState state;
      if (state.ParseFromString(*kept)) std::filesystem::remove(state.cipher_path(), ec);
    }
    store.forget_upload(absolute.string());
  } catch (const std::exception&) {
    // Left for the next run to resume (and send again): nothing is lost.
  }
}

awaitable<result<std::uint64_t>> download_file(client& api, local_store& store,
                                               std::uint64_t server_id,
                                               std::filesystem::path out,
                                               std::filesystem::path work_dir,
                                               transfer_progress progress) {
  std::optional<local_media> row;
  try {
    row = store.media(server_id);
  } catch (const std::exception& e) {
    co_return local_error(std::string("local store failed: ") + e.what());
  }
  if (!row) co_return local_error("message " + std::to_string(server_id) + " carries no file");
  content::Media m;
  if (!m.ParseFromString(row->content) || media_problem(m)) {
    co_return local_error("the file record of message " + std::to_string(server_id) +
                          " is unreadable");
  }
  auto slot = co_await api.request_download(row->chat_id, row->seq);
  if (!slot) co_return slot.error();
  if (slot->media_id() != m.media_id() || slot->size() != m.size()) {
    // The server answered for another blob than the message names: the hash would catch it;
    // say so plainly instead.
    co_return local_error("the server's blob is not the one the message names");
  }
  std::error_code ec;
  std::filesystem::create_directories(work_dir, ec);
  const auto partial = work_dir / (m.media_id() + ".part");
  const std::string url = slot->url();
  auto got = co_await off_thread(
      [&] { return download(url, partial, m.size(), progress, api.ca_file()); });
  if (!got) co_return local_error("download failed: " + describe(got.error()));

  media::media_key key{};
  media::media_sha256 sha{};
  std::copy(m.key().begin(), m.key().end(), reinterpret_cast<char*>(key.data()));
  std::copy(m.sha256().begin(), m.sha256().end(), reinterpret_cast<char*>(sha.data()));
  auto opened = co_await off_thread(
      [&] { return media::decrypt_file(partial, out, key, m.size(), sha); });
  // Verified or not, the ciphertext is of no further use: a bad one must be fetched again.
  std::filesystem::remove(partial, ec);
  if (!opened && opened.error() == media::errc::exists) {
    co_return local_error(out.string() + " appeared meanwhile: it was not overwritten");
  }
  if (!opened) {
    co_return local_error("the file does not verify (" + opened.error().message() +
                          "): nothing was written to " + out.string());
  }
  co_return *opened;
}

#pragma GCC diagnostic pop

}  // namespace parley::client
