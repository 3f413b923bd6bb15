// The media scenario of parley-bench: files through parleyd's blob store on loopback, as the
// SDK moves them (client::upload / client::download, media::encrypt_file / decrypt_file), and
// what transfers do to one-to-one latency. See scenarios.hpp (media_result) for what it
// measures. Files are streamed from and to disk, never held whole in memory.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "client/blob_transfer.hpp"
#include "client/client.hpp"
#include "media/chunked_cipher.hpp"
#include "process_sampler.hpp"
#include "run_on.hpp"
#include "scenarios.hpp"

namespace parley::bench {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace v2 = parley::v2;
using asio::awaitable;
using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Ciphertext the background uploads may leave in parleyd's data directory: every upload is a
// new blob, kept until the run's data directory is removed.
constexpr std::uint64_t background_upload_budget = 4'000'000'000;
// Background upload slots granted per second of the step: 30 x 10 MB = the 300 MB/s.
constexpr double background_slots_per_second = 30;
// How long a message naming a file may take to reach its recipient.
constexpr auto envelope_limit = 10s;
constexpr std::size_t errors_kept = 5;

double seconds_since(clock::time_point start) {
  return std::chrono::duration<double>(clock::now() - start).count();
}

std::string tag() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << (rd() & 0xffffff);
  return s.str();
}

// The value of a request that must succeed for the scenario to go on.
template <class T>
T must(client::result<T> r, const std::string& what) {
  if (!r) throw std::runtime_error("media: " + what + " failed: " + client::describe(r.error()));
  return std::move(*r);
}

void must_ok(const client::result<void>& r, const std::string& what) {
  if (!r) throw std::runtime_error("media: " + what + " failed: " + client::describe(r.error()));
}

std::string bytes_of(const media::media_sha256& digest) {
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

// A client registered as `username` and authenticated on a connection of its own.
std::unique_ptr<client::client> online(asio::io_context& io, const std::string& url,
                                       const std::string& username) {
  auto c = std::make_unique<client::client>(io.get_executor());
  must_ok(run_on(io, c->connect(url)), "connecting " + username);
  const auto reg = must(run_on(io, c->register_account(username)), "registering " + username);
  must(run_on(io, c->authenticate(reg.device_id(), reg.token())), "authenticating " + username);
  return c;
}

// Reads `c`'s pushes until the envelope (chat_id, seq) arrives, at most `limit`, and acks it.
bool await_envelope(asio::io_context& io, client::client& c, std::uint64_t chat_id,
                    std::uint64_t seq, std::chrono::milliseconds limit) {
  const auto deadline = clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left <= 0ms) return false;
    const auto push = run_on(io, c.next_push(left));
    if (!push) return false;  // timed out, or the connection closed
    if (push->has_envelope() && push->envelope().chat_id() == chat_id &&
        push->envelope().seq() == seq) {
      c.ack_async({client::chat_cursor{chat_id, seq}});
      return true;
    }
  }
}

// `size` bytes from a seeded generator, written 1 MiB at a time.
void write_random_file(const fs::path& path, std::uint64_t size, std::uint64_t seed) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> block(128 * 1024);
  for (std::uint64_t done = 0; done < size && out;) {
    for (auto& v : block) v = rng();
    const auto n = std::min<std::uint64_t>(block.size() * sizeof(std::uint64_t), size - done);
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(n));
    done += n;
  }
  out.close();
  if (!out) throw std::runtime_error("media: cannot write " + path.string());
}

// Whether two files hold the same bytes, compared 1 MiB at a time.
bool same_contents(const fs::path& a, const fs::path& b) {
  std::error_code ea, eb;
  const auto size_a = fs::file_size(a, ea);
  const auto size_b = fs::file_size(b, eb);
  if (ea || eb || size_a != size_b) return false;
  std::ifstream x(a, std::ios::binary), y(b, std::ios::binary);
  std::vector<char> bx(1 << 20), by(1 << 20);
  while (x && y) {
    x.read(bx.data(), static_cast<std::streamsize>(bx.size()));
    y.read(by.data(), static_cast<std::streamsize>(by.size()));
    if (x.gcount() != y.gcount() ||
        !std::equal(bx.begin(), bx.begin() + x.gcount(), by.begin()))
      return false;
  }
  return x.eof() && y.eof();
}

// A file encrypted for upload: the original, its ciphertext, its key and what encrypt_file
// said of it.
struct sealed {
  fs::path plain, cipher;
  media::media_key key{};
  media::sealed_file file;
};

// Writes `size` random bytes to `plain`, encrypts them into `cipher`; the seconds encrypt_file
// took in `seconds`.
sealed seal_new_file(const fs::path& plain, const fs::path& cipher, std::uint64_t size,
                     double& seconds) {
  sealed s;
  s.plain = plain;
  s.cipher = cipher;
  std::random_device rd;
  write_random_file(plain, size, (std::uint64_t{rd()} << 32) | rd());
  s.key = media::new_media_key();
  const auto start = clock::now();
  auto r = media::encrypt_file(plain, cipher, s.key);
  seconds = seconds_since(start);
  if (!r) {
    throw std::runtime_error("media: encrypting " + plain.string() +
                             " failed: " + r.error().message());
  }
  s.file = *r;
  return s;
}

// Decrypts the download `partial` of `f` into `out` (timed, in `seconds`), compares it with
// the original and removes `out`. Returns what is wrong, or "" when it is the file.
std::string open_download(const sealed& f, const fs::path& partial, const fs::path& out,
                          double& seconds) {
  std::error_code ec;
  const auto size = fs::file_size(partial, ec);
  if (ec) return "the download is not there: " + ec.message();
  if (size != f.file.size) {
    return "the download holds " + std::to_string(size) + " bytes, not " +
           std::to_string(f.file.size);
  }
  const auto start = clock::now();
  const auto opened = media::decrypt_file(partial, out, f.key, f.file.size, f.file.sha256);
  seconds = seconds_since(start);
  if (!opened) return "decrypting the download failed: " + opened.error().message();
  const bool same = same_contents(f.plain, out);
  fs::remove(out, ec);
  return same ? std::string() : "the download decrypts to other bytes than the file";
}

// parleyd's resident memory, read every 100 ms on a thread of its own from construction to
// stop(): its peak over a transfer.
class rss_watch {
 public:
  explicit rss_watch(pid_t pid)
      : pid_(pid), before_(resident_bytes(pid)), peak_(before_), thread_([this] { run(); }) {}
  ~rss_watch() { stop(); }
  rss_watch(const rss_watch&) = delete;
  rss_watch& operator=(const rss_watch&) = delete;

  std::uint64_t before() const { return before_; }

  // Ends the readings (within ~100 ms), reads once more and returns the peak.
  std::uint64_t stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    const auto last = resident_bytes(pid_);
    std::lock_guard lock(mutex_);
    peak_ = std::max(peak_, last);
    return peak_;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, 100ms, [this] { return stopping_; })) {
      lock.unlock();
      const auto rss = resident_bytes(pid_);
      lock.lock();
      peak_ = std::max(peak_, rss);
    }
  }

  const pid_t pid_;
  const std::uint64_t before_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::uint64_t peak_;
  std::thread thread_;  // last: started once everything above is set
};

double blob_io_cores(const process_sample& from, const process_sample& to) {
  const auto cores = thread_cores_used(from, to);
  const auto it = cores.find("blob-io");
  return it == cores.end() ? 0 : it->second;
}

// Times `transfer` (one client::upload or client::download of `bytes`) and samples parleyd
// around it.
template <class Transfer>
media_transfer timed(pid_t server, std::uint64_t bytes, Transfer transfer) {
  media_transfer m;
  m.ran = true;
  m.bytes = bytes;
  const auto cpu_before = sample_process(server);
  client::transfer_result<void> r;
  {
    rss_watch rss(server);
    const auto start = clock::now();
    r = transfer();
    m.seconds = seconds_since(start);
    m.server_rss_peak = rss.stop();
    m.server_rss_before = rss.before();
  }
  const auto cpu_after = sample_process(server);
  m.server_cores = cores_used(cpu_before, cpu_after);
  m.blob_io_cores = blob_io_cores(cpu_before, cpu_after);
  m.ok = r.has_value();
  if (!r) m.error = client::describe(r.error());
  return m;
}

// `sender` sends `receiver_name` a message naming the blob `media_id` (already uploaded);
// `receiver` waits for it and asks for the file's download URL. Returns the URL, or "" with
// what went wrong in `error`.
std::string share(asio::io_context& io, client::client& sender, client::client& receiver,
                  const std::string& receiver_name, const std::string& media_id,
                  std::uint64_t size, std::string& error) {
  // The payload is opaque to the server: a real client's is the encrypted Content{media}.
  const auto sent =
      must(run_on(io, sender.send(receiver_name, "media-" + media_id, "parley-bench media",
                                  v2::CIPHER_TYPE_SIGNAL_MESSAGE, 0, media_id)),
           "SendMessage naming a file");
  if (!await_envelope(io, receiver, sent.chat_id(), sent.seq(), envelope_limit)) {
    error = "the message naming the file did not reach its recipient within 10 s";
    return {};
  }
  const auto where =
      must(run_on(io, receiver.request_download(sent.chat_id(), sent.seq())), "RequestDownload");
  if (where.media_id() != media_id || where.size() != size) {
    error = "DownloadSlot for another blob: " + where.media_id() + " of " +
            std::to_string(where.size()) + " bytes, not " + media_id + " of " +
            std::to_string(size);
    return {};
  }
  return where.url();
}

// The upload as parley's client makes it: one PUT, or on an S3 store for a file of more than
// one part, a multipart upload (start, the parts' URLs from parleyd, each part, the completion).
client::transfer_result<void> upload_as_the_client_does(asio::io_context& io,
                                                        client::client& sender,
                                                        const v2::UploadSlot& slot,
                                                        const sealed& f) {
  if (slot.multipart_url().empty()) return client::upload(slot.url(), f.cipher);
  auto upload_id = client::start_multipart(slot.multipart_url());
  if (!upload_id) return upload_id.error();
  const auto parts = must(run_on(io, sender.request_upload_parts(slot.media_id(), *upload_id)),
                          "RequestUploadParts");
  std::vector<std::string> etags;
  for (int i = 0; i < parts.part_urls_size(); ++i) {
    const std::uint64_t first = static_cast<std::uint64_t>(i) * parts.part_size();
    const std::uint64_t last = std::min<std::uint64_t>(f.file.size, first + parts.part_size());
    auto etag = client::upload_part(parts.part_urls(i), f.cipher, first, last);
    if (!etag) return etag.error();
    etags.push_back(std::move(*etag));
  }
  return client::complete_multipart(parts.complete_url(), etags);
}

// The big file up (by `sender`) and down (by `receiver`, after the message naming it), each
// transfer timed; the download in `partial`. Returns the download URL ("" if none).
std::string up_and_down(asio::io_context& io, client::client& sender, client::client& receiver,
                        const std::string& receiver_name, const sealed& f, pid_t server,
                        const fs::path& partial, media_transfer& up, media_transfer& down) {
  const auto slot = must(run_on(io, sender.request_upload(f.file.size, bytes_of(f.file.sha256))),
                         "RequestUpload");
  up = timed(server, f.file.size, [&] { return upload_as_the_client_does(io, sender, slot, f); });
  down.bytes = f.file.size;
  if (!up.ok) return {};
  down.ran = true;
  std::string error;
  const std::string url = share(io, sender, receiver, receiver_name, slot.media_id(),
                                f.file.size, error);
  if (url.empty()) {
    down.error = error;
    return {};
  }
  std::error_code ec;
  fs::remove(partial, ec);  // a file already whole would be "downloaded" without a request
  down = timed(server, f.file.size,
               [&] { return client::download(url, partial, f.file.size); });
  return url;
}

// `urls.size()` threads upload `file` at once, each to its own slot. `first_stored`: the index
// of the first URL whose upload was stored (urls.size() if none).
media_concurrent upload_at_once(pid_t server, const std::vector<std::string>& urls,
                                const fs::path& file, std::uint64_t bytes,
                                std::size_t& first_stored) {
  struct outcome {
    clock::time_point start, end;
    bool ok = false;
    std::string error;
  };
  media_concurrent c;
  c.uploads = urls.size();
  c.bytes_each = bytes;
  std::vector<outcome> outcomes(urls.size());
  const auto cpu_before = sample_process(server);
  {
    rss_watch rss(server);
    std::latch go(1);
    {
      std::vector<std::jthread> threads;  // joined when this block ends
      threads.reserve(urls.size());
      try {
        for (std::size_t i = 0; i < urls.size(); ++i) {
          threads.emplace_back([&, i] {
            go.wait();
            auto& o = outcomes[i];
            o.start = clock::now();
            const auto r = client::upload(urls[i], file);
            o.end = clock::now();
            o.ok = r.has_value();
            if (!r) o.error = client::describe(r.error());
          });
        }
      } catch (...) {
        go.count_down();  // the threads started go on (and are joined) before this unwinds
        throw;
      }
      go.count_down();
    }
    c.server_rss_peak = rss.stop();
    c.server_rss_before = rss.before();
  }
  c.server_cores = cores_used(cpu_before, sample_process(server));
  std::vector<double> each;
  auto first = clock::time_point::max();
  auto last = clock::time_point::min();
  first_stored = urls.size();
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    first = std::min(first, o.start);
    last = std::max(last, o.end);
    each.push_back(std::chrono::duration<double>(o.end - o.start).count());
    if (o.ok) {
      ++c.stored;
      first_stored = std::min(first_stored, i);
    } else if (c.errors.size() < errors_kept) {
      c.errors.push_back(o.error);
    }
  }
  if (!outcomes.empty()) {
    c.seconds = std::chrono::duration<double>(last - first).count();
    std::sort(each.begin(), each.end());
    c.p50_seconds = each[each.size() / 2];
    c.max_seconds = each.back();
  }
  return c;
}

// What media_background describes: the transfers that run in a loop during the second
// one-to-one step, on two threads of this process, from start() to stop().
class background_transfers {
 public:
  struct plan {
    std::vector<std::string> upload_urls;  // granted beforehand, one per upload
    fs::path small_cipher;
    std::uint64_t small_size = 0;
    std::string small_download_url;  // "" if none
    std::string big_download_url;    // "" if none
    std::uint64_t big_size = 0;
    fs::path dir;  // where the downloads go
  };

  explicit background_transfers(plan p) : plan_(std::move(p)) {
    result_.upload_slots = plan_.upload_urls.size();
  }
  ~background_transfers() { stop(); }
  background_transfers(const background_transfers&) = delete;
  background_transfers& operator=(const background_transfers&) = delete;

  void start(pid_t server) {
    if (started_) return;
    started_ = true;
    start_ = clock::now();
    rss_.emplace(server);
    if (!plan_.upload_urls.empty() || !plan_.small_download_url.empty())
      threads_.emplace_back([this] { run_small(); });
    if (!plan_.big_download_url.empty()) threads_.emplace_back([this] { run_big(); });
  }

  // Lets the transfers under way finish (each is bounded: 10 s to connect, 30 s for every read
  // and write to make progress), then joins the threads.
  void stop() {
    if (!started_ || stopped_) return;
    stopped_ = true;
    stopping_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    std::lock_guard lock(mutex_);
    result_.seconds = seconds_since(start_);
    result_.server_rss_peak = rss_->stop();
    result_.server_rss_before = rss_->before();
  }

  media_background result() {
    std::lock_guard lock(mutex_);
    return result_;
  }

 private:
  void record(const client::transfer_result<void>& r, std::uint64_t bytes,
              std::uint64_t media_background::*counter) {
    {
      std::lock_guard lock(mutex_);
      if (r) {
        ++(result_.*counter);
        result_.bytes += bytes;
        return;
      }
      ++result_.failed;
      if (result_.errors.size() < errors_kept) result_.errors.push_back(client::describe(r.error()));
    }
    std::this_thread::sleep_for(100ms);  // no tight loop of failures
  }

  void run_small() {
    const fs::path part = plan_.dir / "background-small.part";
    std::error_code ec;
    std::size_t next = 0;
    while (!stopping_) {
      if (next < plan_.upload_urls.size()) {
        record(client::upload(plan_.upload_urls[next++], plan_.small_cipher), plan_.small_size,
               &media_background::uploads);
      } else if (!plan_.small_download_url.empty()) {
        fs::remove(part, ec);
        record(client::download(plan_.small_download_url, part, plan_.small_size),
               plan_.small_size, &media_background::small_downloads);
      } else {
        break;
      }
    }
    fs::remove(part, ec);
  }

  void run_big() {
    const fs::path part = plan_.dir / "background-big.part";
    std::error_code ec;
    while (!stopping_) {
      fs::remove(part, ec);
      record(client::download(plan_.big_download_url, part, plan_.big_size), plan_.big_size,
             &media_background::big_downloads);
    }
    fs::remove(part, ec);
  }

  const plan plan_;
  std::atomic<bool> stopping_{false};
  bool started_ = false, stopped_ = false;
  clock::time_point start_;
  std::optional<rss_watch> rss_;
  std::mutex mutex_;
  media_background result_;
  std::vector<std::thread> threads_;
};

// Removes a directory and everything in it when it goes out of scope.
struct removed_at_exit {
  fs::path dir;
  ~removed_at_exit() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

double media_result::p99_ratio() const {
  const auto& s = one_to_one.steps;
  if (s.size() < 2 || s[0].latency.count() == 0 || s[1].latency.count() == 0) return 0;
  const auto without = s[0].latency.percentile(0.99);
  return without > 0 ? static_cast<double>(s[1].latency.percentile(0.99)) /
                           static_cast<double>(without)
                     : 0;
}

bool media_result::nothing_failed() const {
  bool ok = errors.empty() && upload.ok && download.ok && decrypted_matches &&
            concurrent.uploads > 0 && concurrent.failed() == 0 && background.failed == 0 &&
            one_to_one.steps.size() == 2;
  for (const auto& s : one_to_one.steps) ok = ok && s.lost == 0 && s.stored > 0;
  if (!s3_store.empty()) ok = ok && s3_upload.ok && s3_download.ok && s3_upload_one_put.ok;
  return ok;
}

media_result run_media(const target& t, const media_options& o) {
  if (o.file_bytes == 0 || o.file_bytes > media::max_media_plain_bytes || o.small_bytes == 0 ||
      o.small_bytes > media::max_media_plain_bytes)
    throw std::invalid_argument("media: file sizes must be 1 to 100,000,000 bytes");
  if (o.concurrent_uploads == 0) throw std::invalid_argument("media: no concurrent uploads");
  if (o.work_dir.empty()) throw std::invalid_argument("media: no directory for the files");
  fs::create_directories(o.work_dir);
  const removed_at_exit cleanup{o.work_dir};
  const fs::path& dir = o.work_dir;
  const std::string run = tag();

  media_result r;
  r.rate = o.rate;
  double small_seconds = 0;
  const sealed big =
      seal_new_file(dir / "big.plain", dir / "big.cipher", o.file_bytes, r.encrypt_seconds);
  const sealed small =
      seal_new_file(dir / "small.plain", dir / "small.cipher", o.small_bytes, small_seconds);
  r.file_bytes = big.file.plain_size;
  r.file_cipher_bytes = big.file.size;
  r.small_bytes = small.file.plain_size;
  r.small_cipher_bytes = small.file.size;

  // 1-3 with two users on one connection each; then what the background transfers need,
  // granted now (slots and URLs stay valid 900 s by default) so that they need no requests.
  background_transfers::plan plan;
  plan.small_cipher = small.cipher;
  plan.small_size = small.file.size;
  plan.big_size = big.file.size;
  plan.dir = dir;
  {
    asio::io_context io(1);
    const std::string receiver_name = "mb" + run;
    auto sender = online(io, t.url, "ma" + run);
    auto receiver = online(io, t.url, receiver_name);

    // 1, 2: the big file up, then down by the recipient of a message naming it.
    const fs::path partial = dir / "big.download";
    const auto big_url = up_and_down(io, *sender, *receiver, receiver_name, big, t.pid,
                                     partial, r.upload, r.download);
    if (r.download.ok) {
      plan.big_download_url = big_url;
      const auto wrong = open_download(big, partial, dir / "big.opened", r.decrypt_seconds);
      r.decrypted_matches = wrong.empty();
      if (!wrong.empty()) r.errors.push_back("the big file's download: " + wrong);
    }
    std::error_code ec;
    fs::remove(partial, ec);

    // 3: the small file, uploaded by as many threads at once, each to a slot of its own.
    std::vector<std::string> urls, ids;
    for (std::size_t i = 0; i < o.concurrent_uploads; ++i) {
      const auto slot = must(
          run_on(io, sender->request_upload(small.file.size, bytes_of(small.file.sha256))),
          "RequestUpload");
      urls.push_back(slot.url());
      ids.push_back(slot.media_id());
    }
    std::size_t stored = 0;
    r.concurrent = upload_at_once(t.pid, urls, small.cipher, small.file.size, stored);

    // For the background: a download URL of one of those blobs, and upload slots for as much
    // as the step could take at 300 MB/s, within the disk budget.
    if (stored < ids.size()) {
      std::string error;
      plan.small_download_url =
          share(io, *sender, *receiver, receiver_name, ids[stored], small.file.size, error);
      if (plan.small_download_url.empty())
        r.errors.push_back("the small file's download URL: " + error);
    }
    const auto wanted = static_cast<std::size_t>(
        std::ceil(std::max(0.0, o.step_seconds) * background_slots_per_second));
    const auto budget = static_cast<std::size_t>(background_upload_budget / small.file.size);
    const std::size_t slots = std::max<std::size_t>(1, std::min(wanted, budget));
    for (std::size_t i = 0; i < slots; ++i) {
      plan.upload_urls.push_back(
          must(run_on(io, sender->request_upload(small.file.size, bytes_of(small.file.sha256))),
               "RequestUpload")
              .url());
    }
    run_on(io, sender->close());
    run_on(io, receiver->close());
  }
  if (plan.big_download_url.empty())
    r.errors.push_back("no background downloads of the big file: its own download failed");

  // 4: one-to-one at the same rate, a step without transfers, then a step with them. Threads
  // of this process run only between the two boundaries: the generator's workers are forked
  // before, and no thread may run in a process that forks.
  {
    // What the phases above wrote (encrypted files, downloads, blobs) reaches the disk first:
    // otherwise its writeback lands in the step without transfers and is charged to it (a
    // p99 of 131-729 ms without transfers, against 2.5-9.9 ms, in runs of 2026-11-30).
    ::sync();
    background_transfers background(std::move(plan));
    r.one_to_one = run_one_to_one(t, o.users, {o.rate, o.rate}, o.step_seconds, std::nullopt,
                                  [&](std::size_t k) {
                                    if (k == 1) background.start(t.pid);
                                    if (k == 2) background.stop();
                                  });
    background.stop();
    r.background = background.result();
  }

  // 5: the big file again through a parleyd whose blob store is S3-compatible.
  if (o.s3_server) {
    r.s3_store = o.s3_store.empty() ? std::string("S3") : o.s3_store;
    try {
      const target s3 = o.s3_server();
      asio::io_context io(1);
      const std::string receiver_name = "sb" + run;
      auto sender = online(io, s3.url, "sa" + run);
      auto receiver = online(io, s3.url, receiver_name);
      const fs::path partial = dir / "s3.download";
      up_and_down(io, *sender, *receiver, receiver_name, big, s3.pid, partial, r.s3_upload,
                  r.s3_download);
      if (r.s3_download.ok) {
        double seconds = 0;  // not reported: the local download's decrypt is
        const auto wrong = open_download(big, partial, dir / "s3.opened", seconds);
        if (!wrong.empty()) {
          r.s3_download.ok = false;
          r.s3_download.error = wrong;
        }
      }
      const auto single = must(
          run_on(io, sender->request_upload(big.file.size, bytes_of(big.file.sha256))),
          "RequestUpload");
      r.s3_upload_one_put = timed(s3.pid, big.file.size,
                                  [&] { return client::upload(single.url(), big.cipher); });
      run_on(io, sender->close());
      run_on(io, receiver->close());
    } catch (const std::exception& e) {
      r.errors.push_back(std::string("S3: ") + e.what());
    }
  }
  return r;
}

}  // namespace parley::bench
