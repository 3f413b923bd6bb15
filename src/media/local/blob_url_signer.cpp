#include "media/local/blob_url_signer.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <stdexcept>

#include "common/log.hpp"

namespace parley::media {
namespace {

constexpr std::string_view path_prefix = "/v1/blobs/";
constexpr std::size_t sig_hex_chars = 64;
// Unix seconds past which a time no longer fits system_clock's nanoseconds (year 2262): a URL
// valid that long is treated as valid until then.
constexpr std::uint64_t max_expires_seconds = 9'000'000'000;

std::uint64_t unix_seconds(wall_clock::time_point t) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return s < 0 ? 0 : static_cast<std::uint64_t>(s);
}

wall_clock::time_point from_unix_seconds(std::uint64_t s) {
  const auto clamped = static_cast<std::int64_t>(std::min(s, max_expires_seconds));
  return wall_clock::time_point(
      std::chrono::duration_cast<wall_clock::duration>(std::chrono::seconds(clamped)));
}

// Canonical decimal only: digits, no sign, no leading zero (but "0"), fits 64 bits.
std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  if (s.size() > 1 && s.front() == '0') return std::nullopt;
  if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

bool lower_hex(std::string_view s, std::size_t chars) {
  return s.size() == chars && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The query fields a blob URL may carry; each at most once.
struct query_fields {
  std::optional<std::string_view> op, owner, user, size, sha256, expires, sig;
};

// Splits "k=v&k=v"; false if a piece has no '=' or a known field comes twice.
bool parse_query(std::string_view query, query_fields& out) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = piece.find('=');
    if (eq == std::string_view::npos) return false;
    const std::string_view key = piece.substr(0, eq);
    const std::string_view value = piece.substr(eq + 1);
    std::optional<std::string_view>* slot = nullptr;
    if (key == "op")
      slot = &out.op;
    else if (key == "owner")
      slot = &out.owner;
    else if (key == "user")
      slot = &out.user;
    else if (key == "size")
      slot = &out.size;
    else if (key == "sha256")
      slot = &out.sha256;
    else if (key == "expires")
      slot = &out.expires;
    else if (key == "sig")
      slot = &out.sig;
    if (slot == nullptr) continue;  // not signed, so it cannot change what the URL allows
    if (slot->has_value()) return false;
    *slot = value;
  }
  return true;
}

std::string put_message(std::string_view id, std::uint64_t owner, std::uint64_t size,
                        std::string_view sha256_hex, std::uint64_t expires) {
  std::string m = "PUT\n";
  m.append(id).append("\n");
  m.append(std::to_string(owner)).append("\n");
  m.append(std::to_string(size)).append("\n");
  m.append(sha256_hex).append("\n");
  m.append(std::to_string(expires));
  return m;
}

std::string get_message(std::string_view id, std::uint64_t user, std::uint64_t expires) {
  std::string m = "GET\n";
  m.append(id).append("\n");
  m.append(std::to_string(user)).append("\n");
  m.append(std::to_string(expires));
  return m;
}

// Signature first, then time: an unsigned URL is never told that it expired.
template <class Grant>
verified<Grant> check(bool signature_ok, std::uint64_t expires, wall_clock::time_point now,
                      Grant grant) {
  if (!signature_ok) return url_refusal::bad_signature;
  if (unix_seconds(now) > expires) return url_refusal::expired;
  return grant;
}

}  // namespace

std::string_view to_text(url_refusal r) noexcept {
  switch (r) {
    case url_refusal::malformed:
      return "malformed URL";
    case url_refusal::wrong_operation:
      return "wrong operation";
    case url_refusal::bad_signature:
      return "bad signature";
    case url_refusal::expired:
      return "expired";
  }
  return "refused";
}

void throw_exception_from_error(url_refusal r, const boost::source_location&) {
  throw std::runtime_error("blob URL refused: " + std::string(to_text(r)));
}

std::optional<blob_target> split_blob_target(std::string_view target) noexcept {
  if (!target.starts_with(path_prefix)) return std::nullopt;
  target.remove_prefix(path_prefix.size());
  const auto question = target.find('?');
  blob_target out;
  out.id = target.substr(0, question);
  if (question != std::string_view::npos) out.query = target.substr(question + 1);
  if (!valid_blob_id(out.id)) return std::nullopt;
  return out;
}

blob_url_signer::blob_url_signer(const url_key& key) : key_(key) {}

blob_url_signer::~blob_url_signer() { OPENSSL_cleanse(key_.data(), key_.size()); }

std::string blob_url_signer::mac_hex(std::string_view message) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac,
           &mac_len) == nullptr) {
    // Only without memory; an empty signature matches nothing, so every URL is refused.
    log_error() << "blob URLs: HMAC-SHA256 failed";
    return {};
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * mac_len);
  for (unsigned int i = 0; i < mac_len; ++i) {
    hex.push_back(digits[mac[i] >> 4]);
    hex.push_back(digits[mac[i] & 0x0F]);
  }
  return hex;
}

bool blob_url_signer::signature_matches(std::string_view message, std::string_view sig) const {
  const std::string expected = mac_hex(message);
  return expected.size() == sig_hex_chars && sig.size() == sig_hex_chars &&
         CRYPTO_memcmp(expected.data(), sig.data(), sig_hex_chars) == 0;
}

std::string blob_url_signer::upload_target(const upload_grant& grant) const {
  if (!valid_blob_id(grant.id) || !valid_sha256_hex(grant.sha256_hex)) {
    log_error() << "blob URLs: asked to sign an upload with an invalid id or hash (id '" << grant.id
                << "')";
  }
  const std::uint64_t expires = unix_seconds(grant.expires);
  const std::string sig =
      mac_hex(put_message(grant.id, grant.owner, grant.size, grant.sha256_hex, expires));
  return std::string(path_prefix) + grant.id + "?op=put&owner=" + std::to_string(grant.owner) +
         "&size=" + std::to_string(grant.size) + "&sha256=" + grant.sha256_hex +
         "&expires=" + std::to_string(expires) + "&sig=" + sig;
}

std::string blob_url_signer::download_target(const blob_id& id, std::uint64_t user,
                                             wall_clock::time_point expires) const {
  if (!valid_blob_id(id)) {
    log_error() << "blob URLs: asked to sign a download of an invalid id ('" << id << "')";
  }
  const std::uint64_t at = unix_seconds(expires);
  const std::string sig = mac_hex(get_message(id, user, at));
  return std::string(path_prefix) + id + "?op=get&user=" + std::to_string(user) +
         "&expires=" + std::to_string(at) + "&sig=" + sig;
}

verified<upload_grant> blob_url_signer::verify_upload(std::string_view id, std::string_view query,
                                                      wall_clock::time_point now) const {
  query_fields f;
  if (!valid_blob_id(id) || !parse_query(query, f) || !f.op) return url_refusal::malformed;
  if (*f.op == "get") return url_refusal::wrong_operation;
  if (*f.op != "put" || !f.owner || !f.size || !f.sha256 || !f.expires || !f.sig)
    return url_refusal::malformed;
  const auto owner = parse_u64(*f.owner);
  const auto size = parse_u64(*f.size);
  const auto expires = parse_u64(*f.expires);
  if (!owner || !size || !expires || !valid_sha256_hex(*f.sha256) ||
      !lower_hex(*f.sig, sig_hex_chars)) {
    return url_refusal::malformed;
  }
  upload_grant g;
  g.id = std::string(id);
  g.owner = *owner;
  g.size = *size;
  g.sha256_hex = std::string(*f.sha256);
  g.expires = from_unix_seconds(*expires);
  const bool ok = signature_matches(put_message(id, *owner, *size, *f.sha256, *expires), *f.sig);
  return check(ok, *expires, now, std::move(g));
}

verified<download_grant> blob_url_signer::verify_download(std::string_view id,
                                                          std::string_view query,
                                                          wall_clock::time_point now) const {
  query_fields f;
  if (!valid_blob_id(id) || !parse_query(query, f) || !f.op) return url_refusal::malformed;
  if (*f.op == "put") return url_refusal::wrong_operation;
  if (*f.op != "get" || !f.user || !f.expires || !f.sig) return url_refusal::malformed;
  const auto user = parse_u64(*f.user);
  const auto expires = parse_u64(*f.expires);
  if (!user || !expires || !lower_hex(*f.sig, sig_hex_chars)) return url_refusal::malformed;
  download_grant g;
  g.id = std::string(id);
  g.user = *user;
  g.expires = from_unix_seconds(*expires);
  const bool ok = signature_matches(get_message(id, *user, *expires), *f.sig);
  return check(ok, *expires, now, std::move(g));
}

}  // namespace parley::media
