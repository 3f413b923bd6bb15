#include "server/media_service.hpp"

#include <algorithm>
#include <future>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/thread_name.hpp"
#include "media/local/blob_http_server.hpp"
#include "media/local/local_blob_store.hpp"
#include "media/s3/s3_blob_store.hpp"

namespace parley::server {

namespace asio = boost::asio;

namespace {

// Waits for a store call's completion (the sweeper's own thread may block).
template <class T, class Call>
store::result<T> wait_for(Call call) {
  std::promise<store::result<T>> promise;
  auto future = promise.get_future();
  call([&promise](store::result<T> r) { promise.set_value(std::move(r)); });
  return future.get();
}

// Records (and blobs) handled per round trip to the store.
constexpr std::size_t sweep_page = 512;
// Records deleted at once before their blobs (see sweep_once).
constexpr std::size_t remove_batch = 16;

}  // namespace

media_service::media_service(const config& cfg, store::store& store) : cfg_(cfg), store_(store) {}

media_service::~media_service() { stop(); }

std::optional<asio::ip::tcp::endpoint> media_service::start(
    const asio::ip::tcp::endpoint& main, std::shared_ptr<asio::ssl::context> tls) {
  const auto& m = cfg_.media;
  if (m.s3) {
    media::s3_options o;
    o.endpoint = m.s3_endpoint;
    o.bucket = m.s3_bucket;
    o.credentials.access_key_id = m.s3_access_key;
    o.credentials.secret_access_key = m.s3_secret_key;
    o.credentials.region = m.s3_region;
    o.ca_file = m.s3_ca_file;
    blobs_ = std::make_unique<media::s3_blob_store>(std::move(o));
    log_info() << "media: S3 bucket " << m.s3_bucket << " at " << m.s3_endpoint;
    sweeper_ = std::thread([this] { run_sweeper(); });
    name_thread(sweeper_, "media-sweeper");
    return std::nullopt;
  }
  std::string host = m.listen_host.empty() ? main.address().to_string() : m.listen_host;
  std::uint16_t port = m.listen_port;
  if (!m.listen_set) {
    port = cfg_.listen_port == 0 || main.port() == 65535 ? 0
                                                         : static_cast<std::uint16_t>(main.port() + 1);
  }
  const asio::ip::tcp::endpoint wanted(asio::ip::make_address(host), port);

  // The URLs' base is known once the port is bound: set before any URL is made.
  auto local = std::make_unique<media::local_blob_store>(cfg_.data_dir / "media");
  media::blob_http_server::options opts;
  opts.max_connections = m.max_transfers;
  opts.max_per_source = m.max_transfers_per_address;
  opts.unlimited_sources = parse_address_blocks(cfg_.unlimited_addresses);
  http_ = std::make_unique<media::blob_http_server>(*local, std::move(opts));
  const bool https = tls != nullptr;
  http_->set_tls(std::move(tls));
  auto bound = http_->start(wanted);
  std::string base = m.public_url;
  if (base.empty()) {
    const auto address = bound.address();
    const std::string h = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
    base = (https ? "https://" : "http://") + h + ":" + std::to_string(bound.port());
  }
  if (m.public_url.empty() && bound.address().is_unspecified()) {
    log_warn() << "media: the blob server listens on " << bound
               << ", which is no address a client can reach: set [media] public_url (or "
                  "--media-url) to the address clients use";
  }
  local->set_public_url(base);
  blobs_ = std::move(local);
  log_info() << "media: blobs under " << (cfg_.data_dir / "media").string() << ", served on "
             << bound << (https ? " over TLS" : "") << " as " << base;

  sweeper_ = std::thread([this] { run_sweeper(); });
  name_thread(sweeper_, "media-sweeper");
  return bound;
}

void media_service::set_tls(std::shared_ptr<asio::ssl::context> tls) {
  if (http_) http_->set_tls(std::move(tls));
}

bool media_service::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
}

void media_service::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  if (http_) http_->stop();
}

std::string media_service::upload_url(const media::upload_grant& grant) {
  return blobs_->upload_url(grant);
}

std::string media_service::multipart_start_url(const media::upload_grant& grant) {
  return blobs_->multipart_start_url(grant);
}

std::optional<media::multipart_urls> media_service::multipart_part_urls(
    const media::upload_grant& grant, std::string_view upload_id) {
  return blobs_->multipart_part_urls(grant, upload_id);
}

std::string media_service::download_url(const media::blob_id& id, std::uint64_t user,
                                        media::wall_clock::time_point expires) {
  return blobs_->download_url(id, user, expires);
}

void media_service::run_sweeper() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (wake_.wait_for(lock, cfg_.media.sweep_interval, [this] { return stopping_; })) return;
    lock.unlock();
    const auto report = sweep_once();
    if (report.records_deleted + report.orphans_removed > 0 || report.failed) {
      log_info() << "media sweep: " << report.records_deleted << " unreferenced blobs and "
                 << report.orphans_removed << " orphans deleted"
                 << (report.failed ? " (some failed: see the warnings above)" : "");
    }
    lock.lock();
  }
}

sweep_report media_service::sweep_once() {
  sweep_report report;
  if (!blobs_) return report;
  const auto retention = cfg_.media.unreferenced_retention;
  // At 0 (a retention longer than the clock's count, which the config refuses) nothing is old
  // enough: the subtraction must not wrap round to "everything".
  const std::uint64_t now = now_ms();
  const auto retention_ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(retention).count());
  const std::uint64_t cutoff_ms = now > retention_ms ? now - retention_ms : 0;

  // 1. Unreferenced records past the retention: the record goes first (a send racing with the
  // sweep either referenced it before, and delete_media keeps it, or gets MEDIA_NOT_FOUND),
  // then the blob.
  for (;;) {
    auto page = wait_for<std::vector<store::media_record>>([&](auto done) {
      store_.unreferenced_media(cutoff_ms, sweep_page, std::move(done));
    });
    if (!page) {
      report.failed = true;
      break;
    }
    if (page->empty()) break;
    // The records go in batches of remove_batch, each batch's blobs right after it, and the
    // sweep stops at the first blob it cannot delete (or when the service stops): the local
    // store's orphan pass retries a failed delete, but S3 lists nothing to it, and an object
    // whose record is gone is left to the bucket's lifecycle rules (logged by the store). So
    // an unreachable object store strands at most one batch, not every record due, and
    // costs one DELETE's timeout per sweep, not one per record.
    bool any_deleted = false;
    for (std::size_t at = 0; at < page->size(); at += remove_batch) {
      if (stopping()) return report;
      const std::size_t end = std::min(page->size(), at + remove_batch);
      std::vector<std::string> ids;
      for (std::size_t i = at; i < end; ++i) ids.push_back((*page)[i].media);
      auto deleted = wait_for<std::vector<std::string>>(
          [&](auto done) { store_.delete_media(ids, cutoff_ms, std::move(done)); });
      if (!deleted) {
        report.failed = true;
        return report;
      }
      report.records_deleted += deleted->size();
      any_deleted = any_deleted || !deleted->empty();
      for (const auto& id : *deleted) {
        // The multipart upload bound to the record, aborted with the object.
        const auto first = page->begin() + static_cast<std::ptrdiff_t>(at);
        const auto last = page->begin() + static_cast<std::ptrdiff_t>(end);
        const auto record = std::find_if(first, last, [&](const auto& m) { return m.media == id; });
        const std::string_view upload = record != last ? record->upload_id : std::string_view();
        if (!blobs_->remove(id, upload)) {
          report.failed = true;
          return report;
        }
      }
    }
    if (page->size() < sweep_page || !any_deleted) break;
  }

  // 2. Blobs past the retention without a record: uploads whose record was swept while they
  // were written, or whose blob outlived a crash between the two deletes.
  const auto before = media::wall_clock::now() - retention;
  auto old = blobs_->written_before(before);
  for (std::size_t at = 0; at < old.size(); at += sweep_page) {
    if (stopping()) return report;
    std::vector<std::string> ids(old.begin() + static_cast<std::ptrdiff_t>(at),
                                 old.begin() + static_cast<std::ptrdiff_t>(
                                                   std::min(old.size(), at + sweep_page)));
    auto exists = wait_for<std::vector<bool>>([&](auto done) {
      store_.media_exists(ids, std::move(done));
    });
    if (!exists) {
      report.failed = true;
      break;
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if ((*exists)[i]) continue;
      if (blobs_->remove(ids[i], {})) {
        ++report.orphans_removed;
      } else {
        report.failed = true;
      }
    }
  }
  return report;
}

}  // namespace parley::server
