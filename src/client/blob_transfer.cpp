#include "client/blob_transfer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "common/plain_or_tls.hpp"
#include "common/posix_file.hpp"
#include "common/tls_client.hpp"

namespace boost::system {
void throw_exception_from_error(const parley::client::transfer_error& e,
                                const boost::source_location&) {
  throw std::runtime_error(parley::client::describe(e));
}
}  // namespace boost::system

namespace parley::client {
namespace {

using posix::fd_guard;
using posix::pread_all;
using posix::pwrite_all;
using posix::errno_text;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using tcp = asio::ip::tcp;
using errc = transfer_error::errc;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

constexpr std::chrono::seconds connect_timeout{10};
constexpr std::chrono::seconds io_timeout{30};
constexpr std::size_t piece_bytes = 256 * 1024;
constexpr std::size_t read_buffer_bytes = 64 * 1024;  // what one read of a download may take
constexpr std::uint64_t max_text_bytes = 64 * 1024;  // of an error answer's body
constexpr std::size_t max_message_chars = 1024;
constexpr std::chrono::milliseconds progress_interval{100};
constexpr std::string_view offset_field = "Parley-Upload-Offset";

transfer_error failure(errc code, std::string message) {
  transfer_error e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

std::string_view view(beast::string_view v) { return {v.data(), v.size()}; }

std::optional<std::uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 20 || s.front() == '+' || s.front() == '-') return std::nullopt;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// --- URLs ------------------------------------------------------------------------------------

struct http_url {
  bool tls = false;         // https://
  std::string host;         // without the brackets of an IPv6 address
  std::string port;         // "80" (http://) or "443" (https://) when the URL gives none
  std::string host_header;  // HOST[:PORT] as the URL writes it
  std::string target;       // /PATH?QUERY as the URL writes it
};

transfer_result<http_url> parse_http_url(const std::string& url) {
  http_url out;
  std::string_view scheme = "http://";
  if (url.starts_with("https://")) {
    scheme = "https://";
    out.tls = true;
  } else if (!url.starts_with(scheme)) {
    return failure(errc::bad_url, "the URL must start with http:// or https://, got '" + url + "'");
  }
  const std::string_view rest = std::string_view(url).substr(scheme.size());
  const auto path_at = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, path_at);
  out.host_header = std::string(authority);
  std::string_view after_host;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return failure(errc::bad_url, "an IPv6 address needs ']'");
    out.host = std::string(authority.substr(1, close - 1));
    after_host = authority.substr(close + 1);
  } else {
    const auto colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) after_host = authority.substr(colon);
  }
  if (out.host.empty()) return failure(errc::bad_url, "no host in '" + url + "'");
  if (after_host.empty()) {
    out.port = out.tls ? "443" : "80";
  } else {
    const auto port = after_host.starts_with(':') ? parse_decimal(after_host.substr(1))
                                                  : std::optional<std::uint64_t>{};
    if (!port || *port == 0 || *port > 65535) {
      return failure(errc::bad_url, "the port must be a number from 1 to 65535 in '" + url + "'");
    }
    out.port = std::to_string(*port);
  }
  std::string_view target =
      path_at == std::string_view::npos ? std::string_view{} : rest.substr(path_at);
  target = target.substr(0, target.find('#'));  // a fragment is never sent
  out.target = target.starts_with('/') ? std::string(target) : "/" + std::string(target);
  return out;
}

// --- progress --------------------------------------------------------------------------------

class progress_meter {
 public:
  explicit progress_meter(progress_fn fn) : fn_(std::move(fn)) {}

  // At most every progress_interval (the first call always reports).
  void update(std::uint64_t done, std::uint64_t total) {
    if (!fn_) return;
    const auto now = std::chrono::steady_clock::now();
    if (reported_ && now - last_ < progress_interval) return;
    reported_ = true;
    last_ = now;
    fn_(done, total);
  }
  void finish(std::uint64_t total) {
    if (fn_) fn_(total, total);
  }

 private:
  progress_fn fn_;
  bool reported_ = false;
  std::chrono::steady_clock::time_point last_;
};

// --- HTTP ------------------------------------------------------------------------------------

transfer_error stream_failure(const beast::error_code& ec, std::string_view during) {
  if (ec == beast::error::timeout) {
    return failure(errc::timeout, std::string(during) + ": no progress for " +
                                      std::to_string(io_timeout.count()) + " s");
  }
  return failure(errc::connection, std::string(during) + ": " + ec.message());
}

// A connection to the blob store: TCP for http://, TLS over it for https:// (the certificate
// checked as for wss://: common/tls_client, against `ca_file` or the system's store). Beast's
// calls go through with() (common/plain_or_tls).
class blob_connection {
 public:
  blob_connection(asio::any_io_executor executor, std::string ca_file)
      : executor_(std::move(executor)), ca_file_(std::move(ca_file)) {}

  template <class F>
  decltype(auto) with(F&& f) {
    return connection_.with(std::forward<F>(f));
  }
  void expires_after(std::chrono::steady_clock::duration d) { connection_.expires_after(d); }

  // A new connection to `u` (an earlier one is dropped): resolved and connected within
  // connect_timeout, and for https:// the TLS handshake within connect_timeout more.
  awaitable<transfer_result<void>> open(const http_url& u) {
    if (u.tls) {
      if (!context_) {
        if (auto ec = tls_client::make_context(context_, ca_file_)) {
          context_.reset();
          co_return failure(errc::connect, ec.message());
        }
      }
      auto& tls = connection_.make_tls(executor_, *context_);
      if (auto ec = tls_client::expect_host(tls, u.host)) {
        co_return failure(errc::connect, ec.message());
      }
    } else {
      connection_.make_plain(executor_);
    }
    auto& tcp_layer = connection_.transport();
    tcp::resolver resolver(executor_);
    // The resolver has no deadline of its own: a timer cancels it. (Its handler cannot outlive
    // the resolver: the connect below suspends this coroutine first.)
    asio::steady_timer deadline(executor_, connect_timeout);
    deadline.async_wait([&resolver](const boost::system::error_code& ec) {
      if (!ec) resolver.cancel();
    });
    auto [rec, endpoints] = co_await resolver.async_resolve(u.host, u.port, as_tuple_awaitable);
    deadline.cancel();
    if (rec) {
      co_return failure(errc::connect,
                        "cannot resolve " + u.host + ": " +
                            (rec == asio::error::operation_aborted ? "timed out" : rec.message()));
    }
    tcp_layer.expires_after(connect_timeout);
    auto [cec, endpoint] = co_await tcp_layer.async_connect(endpoints, as_tuple_awaitable);
    if (cec) {
      co_return failure(errc::connect,
                        "cannot connect to " + u.host_header + ": " +
                            (cec == beast::error::timeout ? "timed out" : cec.message()));
    }
    boost::system::error_code ignored;
    tcp_layer.socket().set_option(tcp::no_delay(true), ignored);
    if (auto* tls = connection_.tls()) {
      tcp_layer.expires_after(connect_timeout);
      if (auto ec = co_await tls_client::handshake(*tls)) {
        const std::string why =
            ec == beast::error::timeout ? "TLS handshake timed out" : ec.message();
        co_return failure(errc::connect, u.host_header + ": " + why);
      }
    }
    co_return transfer_result<void>();
  }

 private:
  asio::any_io_executor executor_;
  std::string ca_file_;
  std::optional<asio::ssl::context> context_;  // https:// only, made by the first open()
  plain_or_tls connection_;                    // after context_, which a TLS one uses
};

// A response with (the first 64 KiB of) its text.
struct answer {
  unsigned status = 0;
  std::string text;
  std::optional<std::uint64_t> offset;  // Parley-Upload-Offset
  std::string etag;                      // ETag (S3: a part's), as sent
  bool keep_alive = false;
};

std::string trimmed(std::string text) {
  if (text.size() > max_message_chars) text.resize(max_message_chars);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  return text;
}

transfer_error status_failure(const answer& a) {
  transfer_error e;
  e.code = errc::http_status;
  e.status = a.status;
  e.message = a.text;
  return e;
}

// Reads one whole response; `head`: the response to a HEAD (no body whatever it says).
awaitable<transfer_result<answer>> read_answer(blob_connection& stream,
                                               beast::flat_buffer& buffer, bool head) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_text_bytes);
  if (head) parser.skip(true);
  stream.expires_after(io_timeout);
  auto [ec, n] = co_await stream.with(
      [&](auto& s) { return http::async_read(s, buffer, parser, as_tuple_awaitable); });
  if (ec) co_return stream_failure(ec, "reading the answer");
  const auto& res = parser.get();
  answer a;
  a.status = res.result_int();
  a.text = trimmed(res.body());
  a.keep_alive = res.keep_alive();
  a.etag = std::string(view(res[http::field::etag]));
  if (const auto it = res.find(offset_field); it != res.end()) {
    a.offset = parse_decimal(view(it->value()));
    if (!a.offset) {
      co_return failure(errc::protocol, "malformed " + std::string(offset_field) + ": '" +
                                            std::string(view(it->value())) + "'");
    }
  }
  co_return a;
}

// --- upload ----------------------------------------------------------------------------------

transfer_result<void> upload_outcome(const answer& a, std::uint64_t size, progress_meter& meter) {
  if (a.status == 201 || a.status == 200) {
    meter.finish(size);
    return {};
  }
  if (a.status == 204) {
    return failure(errc::protocol, "the store kept " +
                                       (a.offset ? std::to_string(*a.offset) : std::string("?")) +
                                       " of " + std::to_string(size) + " bytes sent");
  }
  if (a.status < 300) {
    return failure(errc::protocol, "unexpected status " + std::to_string(a.status));
  }
  return status_failure(a);
}

// The size of the regular file `file` opened as `fd` for an upload, or why it cannot be sent.
transfer_result<std::uint64_t> size_to_send(const fd_guard& fd, const std::filesystem::path& file) {
  if (!fd.valid()) return failure(errc::io, "cannot open " + file.string() + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return failure(errc::io, "cannot read " + file.string());
  }
  return static_cast<std::uint64_t>(st.st_size);
}

// Sends `put` (its headers set but the length) with bytes [first, last) of `fd` as its body,
// asking for 100-continue so that a refusal (expired, wrong size...) comes before the body, and
// reads the answer: the interim one if it is not 100. Progress: the file offset, of `total`.
awaitable<transfer_result<answer>> put_range(blob_connection& stream, beast::flat_buffer& buffer,
                                             http::request<http::buffer_body>& put, int fd,
                                             const std::filesystem::path& file,
                                             std::uint64_t first, std::uint64_t last,
                                             std::uint64_t total, progress_meter& meter) {
  put.set(http::field::expect, "100-continue");
  put.content_length(last - first);
  put.body().data = nullptr;
  put.body().more = true;
  http::request_serializer<http::buffer_body> sr{put};
  stream.expires_after(io_timeout);
  auto [pec, pn] = co_await stream.with(
      [&](auto& s) { return http::async_write_header(s, sr, as_tuple_awaitable); });
  if (pec) co_return stream_failure(pec, "sending the upload");
  auto interim = co_await read_answer(stream, buffer, false);
  if (!interim) co_return interim.error();
  if (interim->status != 100) co_return interim;

  // The file, read 256 KiB at a time as the connection takes it; the timeout is per write, so
  // a slow uplink is fine as long as it moves.
  auto piece = std::make_unique_for_overwrite<char[]>(piece_bytes);
  std::uint64_t handed = first;  // bytes of the file given to the serializer so far
  std::uint64_t sent = first;    // of which written to the connection
  bool need_piece = true;
  meter.update(sent, total);
  while (!sr.is_done()) {
    if (need_piece) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(piece_bytes, last - handed));
      if (want > 0 && !pread_all(fd, piece.get(), want, handed)) {
        co_return failure(errc::io, "cannot read " + file.string() + " (did it change?)");
      }
      put.body().data = want > 0 ? piece.get() : nullptr;
      put.body().size = want;
      put.body().more = handed + want < last;
      handed += want;
      need_piece = false;
    }
    stream.expires_after(io_timeout);
    auto [ec, n] = co_await stream.with(
        [&](auto& s) { return http::async_write_some(s, sr, as_tuple_awaitable); });
    if (ec == http::error::need_buffer) {
      need_piece = true;
      continue;
    }
    if (ec) {
      // The store may have answered (and closed) before taking all of it: prefer its words.
      auto early = co_await read_answer(stream, buffer, false);
      if (early && early->status >= 300) co_return early;
      co_return stream_failure(ec, "sending the upload");
    }
    sent = std::min(sent + n, last);
    meter.update(sent, total);
  }
  co_return co_await read_answer(stream, buffer, false);
}

awaitable<transfer_result<void>> run_upload(std::string url, std::filesystem::path file,
                                            progress_fn progress, std::string ca_file) {
  const auto u = parse_http_url(url);
  if (!u) co_return u.error();
  fd_guard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  const auto readable = size_to_send(fd, file);
  if (!readable) co_return readable.error();
  const std::uint64_t size = *readable;
  progress_meter meter(std::move(progress));

  blob_connection stream(co_await asio::this_coro::executor, std::move(ca_file));
  beast::flat_buffer buffer;
  auto connected = co_await stream.open(*u);
  if (!connected) co_return connected.error();

  // How much of it does the store hold already?
  http::request<http::empty_body> head{http::verb::head, u->target, 11};
  head.set(http::field::host, u->host_header);
  head.set(http::field::user_agent, "parley");
  stream.expires_after(io_timeout);
  auto [hec, hn] = co_await stream.with(
      [&](auto& s) { return http::async_write(s, head, as_tuple_awaitable); });
  if (hec) co_return stream_failure(hec, "asking for the upload offset");
  auto probe = co_await read_answer(stream, buffer, true);
  if (!probe) co_return probe.error();
  std::uint64_t offset = 0;
  if (probe->status == 200 && probe->offset) {
    if (*probe->offset == size) {
      meter.finish(size);
      co_return transfer_result<void>();
    }
    if (*probe->offset > size) {
      co_return failure(errc::verification, "the store holds " + std::to_string(*probe->offset) +
                                                " bytes of this blob, more than the file's " +
                                                std::to_string(size));
    }
    offset = *probe->offset;
  }
  if (!probe->keep_alive) {
    buffer.clear();
    auto again = co_await stream.open(*u);
    if (!again) co_return again.error();
  }

  // The rest of the file. 100-continue: a refusal comes before the body, not after it.
  http::request<http::buffer_body> put{http::verb::put, u->target, 11};
  put.set(http::field::host, u->host_header);
  put.set(http::field::user_agent, "parley");
  put.set(http::field::content_type, "application/octet-stream");
  if (offset > 0) {
    put.set(http::field::content_range, "bytes " + std::to_string(offset) + "-" +
                                            std::to_string(size - 1) + "/" + std::to_string(size));
  }
  auto last = co_await put_range(stream, buffer, put, fd.get(), file, offset, size, size, meter);
  if (!last) co_return last.error();
  co_return upload_outcome(*last, size, meter);
}

// --- S3 multipart ------------------------------------------------------------------------------

// The text between <tag> and </tag> in an S3 XML answer, or nullopt.
std::optional<std::string> xml_value(std::string_view xml, std::string_view tag) {
  const std::string open = "<" + std::string(tag) + ">";
  const std::string close = "</" + std::string(tag) + ">";
  const auto at = xml.find(open);
  if (at == std::string_view::npos) return std::nullopt;
  const auto from = at + open.size();
  const auto to = xml.find(close, from);
  if (to == std::string_view::npos) return std::nullopt;
  return std::string(xml.substr(from, to - from));
}

// POSTs `body` to `url` and reads the whole answer (its first 64 KiB of text).
awaitable<transfer_result<answer>> run_post(std::string url, std::string body,
                                            std::string ca_file) {
  const auto u = parse_http_url(url);
  if (!u) co_return u.error();
  blob_connection stream(co_await asio::this_coro::executor, std::move(ca_file));
  auto connected = co_await stream.open(*u);
  if (!connected) co_return connected.error();
  http::request<http::string_body> post{http::verb::post, u->target, 11};
  post.set(http::field::host, u->host_header);
  post.set(http::field::user_agent, "parley");
  if (!body.empty()) post.set(http::field::content_type, "application/xml");
  post.body() = std::move(body);
  post.prepare_payload();
  stream.expires_after(io_timeout);
  auto [ec, n] = co_await stream.with(
      [&](auto& s) { return http::async_write(s, post, as_tuple_awaitable); });
  if (ec) co_return stream_failure(ec, "sending the request");
  beast::flat_buffer buffer;
  co_return co_await read_answer(stream, buffer, false);
}

awaitable<transfer_result<std::string>> run_start_multipart(std::string url,
                                                            std::string ca_file) {
  auto a = co_await run_post(std::move(url), {}, std::move(ca_file));
  if (!a) co_return a.error();
  if (a->status != 200) co_return status_failure(*a);
  auto id = xml_value(a->text, "UploadId");
  if (!id || id->empty()) co_return failure(errc::protocol, "no UploadId in the answer");
  co_return std::move(*id);
}

awaitable<transfer_result<std::string>> run_upload_part(std::string url,
                                                        std::filesystem::path file,
                                                        std::uint64_t first, std::uint64_t last,
                                                        progress_fn progress,
                                                        std::string ca_file) {
  const auto u = parse_http_url(url);
  if (!u) co_return u.error();
  fd_guard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  const auto readable = size_to_send(fd, file);
  if (!readable) co_return readable.error();
  const std::uint64_t size = *readable;
  if (first >= last || last > size) {
    co_return failure(errc::io, file.string() + " has no bytes " + std::to_string(first) + "-" +
                                    std::to_string(last) + " (did it change?)");
  }
  progress_meter meter(std::move(progress));
  blob_connection stream(co_await asio::this_coro::executor, std::move(ca_file));
  auto connected = co_await stream.open(*u);
  if (!connected) co_return connected.error();
  beast::flat_buffer buffer;
  http::request<http::buffer_body> put{http::verb::put, u->target, 11};
  put.set(http::field::host, u->host_header);
  put.set(http::field::user_agent, "parley");
  auto a = co_await put_range(stream, buffer, put, fd.get(), file, first, last, size, meter);
  if (!a) co_return a.error();
  if (a->status != 200) {
    if (a->status < 300) {
      co_return failure(errc::protocol, "unexpected status " + std::to_string(a->status));
    }
    co_return status_failure(*a);
  }
  if (a->etag.empty()) co_return failure(errc::protocol, "no ETag for the part");
  meter.update(last, size);
  co_return std::move(a->etag);
}

awaitable<transfer_result<void>> run_complete_multipart(std::string url,
                                                        std::vector<std::string> etags,
                                                        std::string ca_file) {
  std::string xml = "<CompleteMultipartUpload>";
  for (std::size_t i = 0; i < etags.size(); ++i) {
    xml += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" + etags[i] +
           "</ETag></Part>";
  }
  xml += "</CompleteMultipartUpload>";
  auto a = co_await run_post(std::move(url), std::move(xml), std::move(ca_file));
  if (!a) co_return a.error();
  if (a->status != 200) co_return status_failure(*a);
  // S3 may answer 200 and then an <Error> (a failure found while assembling).
  if (a->text.find("<Error>") != std::string::npos) {
    auto a_error = *a;
    a_error.text = xml_value(a->text, "Code").value_or("error") + ": " +
                   xml_value(a->text, "Message").value_or("");
    co_return status_failure(a_error);
  }
  if (a->text.find("CompleteMultipartUploadResult") == std::string::npos) {
    co_return failure(errc::protocol, "no CompleteMultipartUploadResult in the answer");
  }
  co_return transfer_result<void>();
}

// --- download --------------------------------------------------------------------------------

// Content-Range of a 206: "bytes FIRST-LAST/TOTAL".
bool range_is(std::string_view v, std::uint64_t first, std::uint64_t last, std::uint64_t total) {
  return v == "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                  std::to_string(total);
}

awaitable<transfer_result<void>> run_download(std::string url, std::filesystem::path file,
                                              std::uint64_t expected, progress_fn progress,
                                              std::string ca_file) {
  const auto u = parse_http_url(url);
  if (!u) co_return u.error();
  progress_meter meter(std::move(progress));
  std::uint64_t have = 0;
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0) {
    have = static_cast<std::uint64_t>(st.st_size);
  } else if (errno != ENOENT) {
    co_return failure(errc::io, "cannot stat " + file.string() + ": " + errno_text());
  }
  if (have == expected) {
    if (expected == 0) {  // nothing to fetch, but the file must be there
      fd_guard fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd.valid())
        co_return failure(errc::io, "cannot create " + file.string() + ": " + errno_text());
    }
    meter.finish(expected);
    co_return transfer_result<void>();
  }
  if (have > expected) have = 0;  // not a prefix of this blob: start over

  blob_connection stream(co_await asio::this_coro::executor, std::move(ca_file));
  // Reserved whole: Beast reads max(512, capacity - size) bytes per call (see the blob
  // server's serve()), 512 from a buffer that only grew as far as the header.
  beast::flat_buffer buffer;
  buffer.reserve(read_buffer_bytes);
  auto connected = co_await stream.open(*u);
  if (!connected) co_return connected.error();

  http::request<http::empty_body> get{http::verb::get, u->target, 11};
  get.set(http::field::host, u->host_header);
  get.set(http::field::user_agent, "parley");
  if (have > 0) get.set(http::field::range, "bytes=" + std::to_string(have) + "-");
  stream.expires_after(io_timeout);
  auto [wec, wn] = co_await stream.with(
      [&](auto& s) { return http::async_write(s, get, as_tuple_awaitable); });
  if (wec) co_return stream_failure(wec, "sending the request");

  http::response_parser<http::empty_body> header;
  header.body_limit(boost::none);  // counted against `expected` below
  stream.expires_after(io_timeout);
  auto [hec, hn] = co_await stream.with(
      [&](auto& s) { return http::async_read_header(s, buffer, header, as_tuple_awaitable); });
  if (hec) co_return stream_failure(hec, "reading the answer");
  const unsigned status = header.get().result_int();
  if (status == 206 && have > 0) {
    const auto range = header.get()[http::field::content_range];
    if (!range_is(view(range), have, expected - 1, expected)) {
      co_return failure(errc::verification, "asked for bytes " + std::to_string(have) + "-" +
                                                std::to_string(expected - 1) + "/" +
                                                std::to_string(expected) + ", got '" +
                                                std::string(view(range)) + "'");
    }
  } else if (status == 200) {
    have = 0;  // the whole blob: the file starts over
    const auto length = header.content_length();
    if (length && *length != expected) {
      co_return failure(errc::verification, "the store has " + std::to_string(*length) +
                                                " bytes, expected " + std::to_string(expected));
    }
  } else if (status == 206) {
    co_return failure(errc::protocol, "a partial answer (206) to a request for everything");
  } else {
    http::response_parser<http::string_body> text(std::move(header));
    text.body_limit(max_text_bytes);
    stream.expires_after(io_timeout);
    co_await stream.with([&](auto& s) {  // best effort
      return http::async_read(s, buffer, text, as_tuple_awaitable);
    });
    answer a;
    a.status = status;
    a.text = trimmed(text.get().body());
    co_return status_failure(a);
  }

  // O_NOFOLLOW: the work file is written only as itself, never through a link put in its
  // place.
  fd_guard fd(
      have > 0 ? ::open(file.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
               : ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid())
    co_return failure(errc::io, "cannot open " + file.string() + ": " + errno_text());
  // The blob as it arrives, collected into pieces of up to 256 KiB, each written when full (or
  // when the body or the connection ends); the timeout is per read.
  http::response_parser<http::buffer_body> body(std::move(header));
  body.body_limit(boost::none);
  auto piece = std::make_unique_for_overwrite<char[]>(piece_bytes);
  auto& slot = body.get().body();
  slot.data = piece.get();
  slot.size = piece_bytes;
  std::uint64_t done = have;
  meter.update(done, expected);
  while (!body.is_done()) {
    stream.expires_after(io_timeout);
    auto [ec, n] = co_await stream.with(
        [&](auto& s) { return http::async_read_some(s, buffer, body, as_tuple_awaitable); });
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = piece_bytes - slot.size;
    if (got > expected - done) {
      co_return failure(errc::verification, "the store sent more than the expected " +
                                                std::to_string(expected) + " bytes");
    }
    if (got > 0 && (got == piece_bytes || body.is_done() || ec)) {
      if (!pwrite_all(fd.get(), piece.get(), got, done)) {
        co_return failure(errc::io, "cannot write " + file.string() + ": " + errno_text());
      }
      done += got;
      slot.data = piece.get();
      slot.size = piece_bytes;
      meter.update(done, expected);
    }
    if (ec) co_return stream_failure(ec, "receiving the blob");
  }
  if (done != expected) {
    co_return failure(errc::verification, "the store sent " + std::to_string(done) + " of " +
                                              std::to_string(expected) + " bytes");
  }
  if (!fd.close())
    co_return failure(errc::io, "cannot write " + file.string() + ": " + errno_text());
  meter.finish(expected);
  co_return transfer_result<void>();
}

// Runs `work` to its end on a private io_context on this thread.
template <class T>
transfer_result<T> run_here(awaitable<transfer_result<T>> work) {
  asio::io_context io(1);
  transfer_result<T> out = failure(errc::io, "the transfer did not finish");
  std::exception_ptr thrown;
  asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, transfer_result<T> r) {
    thrown = std::move(e);
    out = std::move(r);
  });
  io.run();
  if (thrown) std::rethrow_exception(thrown);
  return out;
}

}  // namespace

std::string describe(const transfer_error& e) {
  switch (e.code) {
    case errc::bad_url:
      return "bad blob URL: " + e.message;
    case errc::connect:
      return "cannot reach the blob store: " + e.message;
    case errc::timeout:
      return "the blob store stopped responding: " + e.message;
    case errc::connection:
      return "connection to the blob store lost: " + e.message;
    case errc::http_status:
      return "the blob store answered " + std::to_string(e.status) +
             (e.message.empty() ? "" : ": " + e.message);
    case errc::protocol:
      return "unexpected answer from the blob store: " + e.message;
    case errc::verification:
      return "the blob does not add up: " + e.message;
    case errc::io:
      return "local file: " + e.message;
  }
  return "blob transfer failed: " + e.message;
}

transfer_result<void> upload(const std::string& url, const std::filesystem::path& ciphertext_file,
                             const progress_fn& progress, const std::string& ca_file) {
  return run_here(run_upload(url, ciphertext_file, progress, ca_file));
}

transfer_result<std::string> start_multipart(const std::string& url, const std::string& ca_file) {
  return run_here(run_start_multipart(url, ca_file));
}

transfer_result<std::string> upload_part(const std::string& url,
                                         const std::filesystem::path& ciphertext_file,
                                         std::uint64_t first, std::uint64_t last,
                                         const progress_fn& progress,
                                         const std::string& ca_file) {
  return run_here(run_upload_part(url, ciphertext_file, first, last, progress, ca_file));
}

transfer_result<void> complete_multipart(const std::string& url,
                                         const std::vector<std::string>& etags,
                                         const std::string& ca_file) {
  return run_here(run_complete_multipart(url, etags, ca_file));
}

transfer_result<void> download(const std::string& url, const std::filesystem::path& partial_file,
                               std::uint64_t expected_size, const progress_fn& progress,
                               const std::string& ca_file) {
  return run_here(run_download(url, partial_file, expected_size, progress, ca_file));
}

}  // namespace parley::client
