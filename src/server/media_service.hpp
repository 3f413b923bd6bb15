// Media on the server side: which blob store holds the files, the URLs it signs for clients,
// and the sweeper that deletes what no message references (docs/architecture.md, "Media").
//
// Embedded (the default): media::local_blob_store under <data>/media, served by
// media::blob_http_server on the media address, on a thread of its own so that transfers
// never hold up the message threads. With [media] store = "s3": media::s3_blob_store, and no
// blob server (clients talk to the object store).
//
// The sweeper (a thread of its own: the blob store's deletes are blocking I/O) runs every
// media.sweep_interval: it deletes the records with no reference created more than
// media.unreferenced_retention ago, then their blobs (a crash in between leaves a blob without
// a record, which the next sweep's orphan pass removes), then every blob, complete or partial,
// older than the retention that has no record.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "media/blob_store.hpp"
#include "server/config.hpp"
#include "store/store.hpp"

namespace parley::media {
class blob_http_server;
class local_blob_store;
}

namespace parley::server {

// What one sweep did (for the log and the tests).
struct sweep_report {
  std::size_t records_deleted = 0;  // unreferenced records past the retention
  std::size_t orphans_removed = 0;  // blobs without a record past the retention
  bool failed = false;              // the store or the blob store refused; retried next time
};

class media_service {
 public:
  // Nothing is opened here: start() opens the blob store (creating <data>/media and its URL
  // key, or checking the S3 settings).
  media_service(const config& cfg, store::store& store);
  ~media_service();
  media_service(const media_service&) = delete;
  media_service& operator=(const media_service&) = delete;

  // Binds the blob server's address (see media_config; `main` is the main address's bound
  // endpoint) and starts it and the sweeper. With `tls` (parleyd's certificate, as the main
  // port has it) the blob server speaks HTTPS and its URLs' default base is https://. Returns
  // the address bound (none with S3). Throws on failure.
  std::optional<boost::asio::ip::tcp::endpoint> start(
      const boost::asio::ip::tcp::endpoint& main,
      std::shared_ptr<boost::asio::ssl::context> tls = nullptr);
  // A reloaded certificate for the blob server's new connections (SIGHUP); nothing with S3.
  void set_tls(std::shared_ptr<boost::asio::ssl::context> tls);
  // Stops the sweeper and the blob server (transfers in progress are cut: they resume).
  void stop();

  // Thread-safe, no I/O.
  [[nodiscard]] std::string upload_url(const media::upload_grant& grant);
  // S3 only (blob_store): empty / nullopt with the local store.
  [[nodiscard]] std::string multipart_start_url(const media::upload_grant& grant);
  [[nodiscard]] std::optional<media::multipart_urls> multipart_part_urls(
      const media::upload_grant& grant, std::string_view upload_id);
  [[nodiscard]] std::string download_url(const media::blob_id& id, std::uint64_t user,
                                         media::wall_clock::time_point expires);

  // One sweep now, on the caller's thread (blocks on the store and the blob store).
  sweep_report sweep_once();

 private:
  void run_sweeper();

  config cfg_;
  store::store& store_;
  // Signs URLs and deletes blobs: the local store (which the blob server serves) or S3.
  std::unique_ptr<media::blob_store> blobs_;
  std::unique_ptr<media::blob_http_server> http_;
  std::thread sweeper_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool stopping();  // under the mutex
};

}  // namespace parley::server
