#include "media/s3/s3_blob_store.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <exception>
#include <optional>
#include <stdexcept>

#include "common/log.hpp"
#include "common/tls_client.hpp"

namespace parley::media {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// A URL stays valid at least a second (SigV4's minimum) and at most 7 days (S3's maximum).
std::chrono::seconds lifetime_until(wall_clock::time_point expires) {
  const auto left = std::chrono::ceil<std::chrono::seconds>(expires - wall_clock::now());
  return std::clamp(left, std::chrono::seconds(1), s3::max_presign_expiry);
}

constexpr auto remove_deadline = std::chrono::seconds(10);

constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// One request and its whole answer on a connected stream, plain or TLS.
template <class Stream>
asio::awaitable<boost::system::error_code> exchange(Stream& stream,
                                                    const http::request<http::empty_body>& req,
                                                    http::response<http::string_body>& res) {
  beast::flat_buffer buffer;
  auto [wec, wn] = co_await http::async_write(stream, req, as_tuple_awaitable);
  if (wec) co_return wec;
  auto [rec, rn] = co_await http::async_read(stream, buffer, res, as_tuple_awaitable);
  co_return rec;
}

// `req` to HOST:PORT (`tls`: over TLS with that context, the certificate checked for `host`),
// the answer into `res`; every step within remove_deadline.
asio::awaitable<boost::system::error_code> delete_object(
    const http::request<http::empty_body>& req, http::response<http::string_body>& res,
    std::string host, std::string port, asio::ssl::context* tls) {
  const auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(executor);
  auto [rec, results] = co_await resolver.async_resolve(host, port, as_tuple_awaitable);
  if (rec) co_return rec;
  if (!tls) {
    beast::tcp_stream stream(executor);
    stream.expires_after(remove_deadline);
    auto [cec, ep] = co_await stream.async_connect(results, as_tuple_awaitable);
    if (cec) co_return cec;
    co_return co_await exchange(stream, req, res);
  }
  tls_client::stream stream(executor, *tls);
  if (auto ec = tls_client::expect_host(stream, host)) co_return ec;
  auto& tcp = beast::get_lowest_layer(stream);
  tcp.expires_after(remove_deadline);
  auto [cec, ep] = co_await tcp.async_connect(results, as_tuple_awaitable);
  if (cec) co_return cec;
  if (auto ec = co_await tls_client::handshake(stream)) co_return ec;
  co_return co_await exchange(stream, req, res);
}

}  // namespace

s3_blob_store::s3_blob_store(s3_options options) : options_(std::move(options)) {
  const auto& e = options_.endpoint;
  const auto sep = e.find("://");
  if (sep == std::string::npos) throw std::invalid_argument("S3 endpoint must be http(s)://HOST[:PORT]");
  scheme_ = e.substr(0, sep);
  if (scheme_ != "http" && scheme_ != "https")
    throw std::invalid_argument("S3 endpoint must be http(s)://HOST[:PORT], got " + e);
  host_ = e.substr(sep + 3);
  while (!host_.empty() && host_.back() == '/') host_.pop_back();
  if (host_.empty() || host_.find('/') != std::string::npos)
    throw std::invalid_argument("S3 endpoint must be http(s)://HOST[:PORT] (no path), got " + e);
  const auto colon = host_.rfind(':');
  const bool has_port = colon != std::string::npos && host_.find(']', colon) == std::string::npos;
  name_ = has_port ? host_.substr(0, colon) : host_;
  // An IPv6 literal is bracketed in the URL and the Host header, not for the resolver or the
  // certificate check.
  if (name_.size() > 2 && name_.front() == '[' && name_.back() == ']')
    name_ = name_.substr(1, name_.size() - 2);
  port_ = has_port ? host_.substr(colon + 1) : (scheme_ == "https" ? "443" : "80");
  if (options_.bucket.empty()) throw std::invalid_argument("S3 bucket is empty");
  if (options_.credentials.access_key_id.empty() || options_.credentials.secret_access_key.empty())
    throw std::invalid_argument("S3 access key and secret key are required");
  if (options_.credentials.region.empty()) options_.credentials.region = "us-east-1";
}

std::string s3_blob_store::presigned(const std::string& method, const blob_id& id,
                                     s3::name_values query, s3::name_values headers,
                                     wall_clock::time_point expires) const {
  s3::request r;
  r.method = method;
  r.host = host_;
  r.path = "/" + options_.bucket + "/" + id;
  r.query = std::move(query);
  r.headers = std::move(headers);
  const auto signed_query =
      s3::presign_query(options_.credentials, r, wall_clock::now(), lifetime_until(expires));
  return scheme_ + "://" + host_ + s3::canonical_uri(r.path) + "?" + signed_query;
}

std::string s3_blob_store::upload_url(const upload_grant& grant) {
  if (!valid_blob_id(grant.id)) return {};
  // The length is signed: the object store refuses a body of any other size.
  return presigned("PUT", grant.id, {}, {{"content-length", std::to_string(grant.size)}},
                   grant.expires);
}

std::string s3_blob_store::multipart_start_url(const upload_grant& grant) {
  if (!valid_blob_id(grant.id) || grant.size <= part_bytes) return {};
  return presigned("POST", grant.id, {{"uploads", ""}}, {}, grant.expires);
}

std::optional<multipart_urls> s3_blob_store::multipart_part_urls(const upload_grant& grant,
                                                                 std::string_view upload_id) {
  if (!valid_blob_id(grant.id) || upload_id.empty()) return std::nullopt;
  multipart_urls out;
  out.part_size = part_bytes;
  const std::string upload(upload_id);
  for (std::uint64_t at = 0, n = 1; at < grant.size; at += part_bytes, ++n) {
    const auto length = std::min(part_bytes, grant.size - at);
    out.parts.push_back(presigned("PUT", grant.id,
                                  {{"partNumber", std::to_string(n)}, {"uploadId", upload}},
                                  {{"content-length", std::to_string(length)}}, grant.expires));
  }
  out.complete = presigned("POST", grant.id, {{"uploadId", upload}}, {}, grant.expires);
  return out;
}

std::string s3_blob_store::download_url(const blob_id& id, std::uint64_t /*user*/,
                                        wall_clock::time_point expires) {
  if (!valid_blob_id(id)) return {};
  return presigned("GET", id, {}, {}, expires);
}

bool s3_blob_store::remove(const blob_id& id, std::string_view upload_id) {
  if (!valid_blob_id(id)) return false;
  // The upload first (AbortMultipartUpload: its parts go; 404 NoSuchUpload once it was
  // completed or aborted), then the object (the completed upload's, or nothing). An abort
  // refused (a key without s3:AbortMultipartUpload, an id the store rejects: the client chose
  // it) is logged by send_delete and left to the bucket's lifecycle rule: it must not keep
  // the object, nor stop the sweep, whose record is gone already.
  if (!upload_id.empty()) (void)send_delete(id, {{"uploadId", std::string(upload_id)}});
  return send_delete(id, {});
}

bool s3_blob_store::send_delete(const blob_id& id, s3::name_values query) const {
  const bool abort = !query.empty();
  const auto what = [&] {
    return std::string(abort ? "S3 abort of the upload of " : "S3 delete of ") + id;
  };
  s3::request r;
  r.method = "DELETE";
  r.host = host_;
  r.path = "/" + options_.bucket + "/" + id;
  r.query = std::move(query);
  r.payload_sha256_hex = std::string(s3::empty_payload_sha256);
  const auto auth = s3::sign_headers(options_.credentials, r, wall_clock::now());

  std::string target = s3::canonical_uri(r.path);
  if (!r.query.empty()) target += "?" + s3::canonical_query(r.query);
  http::request<http::empty_body> req{http::verb::delete_, target, 11};
  req.set(http::field::host, host_);
  req.set("x-amz-date", auth.amz_date);
  if (!auth.content_sha256.empty()) req.set("x-amz-content-sha256", auth.content_sha256);
  req.set(http::field::authorization, auth.authorization);
  req.keep_alive(false);

  // On a private io_context, within remove_deadline: resolve, connect, for https:// the TLS
  // handshake (the certificate checked against ca_file or the system's store), then the
  // request and its answer.
  http::response<http::string_body> res;
  boost::system::error_code failure;
  std::optional<asio::ssl::context> tls_context;  // outlives `io`, whose pending work uses it
  if (scheme_ == "https") {
    if (auto ec = tls_client::make_context(tls_context, options_.ca_file)) {
      log_warn() << "media: " << what() << " failed: " << ec.message();
      return false;
    }
  }
  asio::io_context io(1);
  asio::co_spawn(io, delete_object(req, res, name_, port_, tls_context ? &*tls_context : nullptr),
                 [&](std::exception_ptr e, boost::system::error_code ec) {
                   failure = e ? asio::error::operation_aborted : ec;
                 });
  io.run_for(remove_deadline + std::chrono::seconds(1));
  if (failure || res.result_int() == 0) {
    log_warn() << "media: " << what()
               << " failed: " << (failure ? failure.message() : std::string("no answer"));
    return false;
  }
  // 204 (deleted or aborted) and 404 (no such object or upload) both leave nothing behind.
  const unsigned status = res.result_int();
  if (status == 204 || status == 200 || status == 404) return true;
  log_warn() << "media: " << what() << " answered " << status << ": " << res.body().substr(0, 200);
  return false;
}

std::vector<blob_id> s3_blob_store::written_before(wall_clock::time_point /*before*/) {
  return {};
}

}  // namespace parley::media
