#include "media/s3/sigv4.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <stdexcept>

namespace parley::media::s3 {
namespace {

constexpr std::string_view algorithm = "AWS4-HMAC-SHA256";

using digest = std::array<std::uint8_t, 32>;

const unsigned char* data_of(std::string_view s) noexcept {
  return reinterpret_cast<const unsigned char*>(s.data());
}

digest hmac_sha256(std::span<const std::uint8_t> key, std::string_view data) {
  digest out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data_of(data), data.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    ERR_clear_error();
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return out;
}

digest sha256(std::string_view data) {
  digest out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    ERR_clear_error();
    throw std::runtime_error("SHA-256 failed");
  }
  return out;
}

std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (const auto b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

bool unreserved(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool blank(char c) noexcept { return c == ' ' || c == '\t'; }

// Trimmed, each inner run of blanks made one space (SigV4's Trimall).
std::string trim_all(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  bool pending_space = false;
  for (const char c : v) {
    if (blank(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

// Host plus r.headers as (lowercase name, trimmed value), sorted by name (stable, so repeated
// names keep their order), repeated names merged with ','.
name_values canonical_headers(const request& r) {
  name_values all;
  all.reserve(r.headers.size() + 1);
  all.emplace_back("host", trim_all(r.host));
  for (const auto& [name, value] : r.headers) {
    std::string lower(name.size(), '\0');
    std::transform(name.begin(), name.end(), lower.begin(), ascii_lower);
    all.emplace_back(std::move(lower), trim_all(value));
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  name_values merged;
  for (auto& header : all) {
    if (!merged.empty() && merged.back().first == header.first) {
      merged.back().second += ',';
      merged.back().second += header.second;
    } else {
      merged.push_back(std::move(header));
    }
  }
  return merged;
}

std::string signed_header_list(const name_values& headers) {
  std::string out;
  for (const auto& [name, value] : headers) {
    if (!out.empty()) out += ';';
    out += name;
  }
  return out;
}

bool has_header(const request& r, std::string_view lower_name) {
  return std::any_of(r.headers.begin(), r.headers.end(), [&](const auto& header) {
    const auto& name = header.first;
    return name.size() == lower_name.size() &&
           std::equal(name.begin(), name.end(), lower_name.begin(),
                      [](char a, char b) { return ascii_lower(a) == b; });
  });
}

void append_padded(std::string& out, long long value, std::size_t width) {
  const std::string digits = std::to_string(value);
  if (digits.size() < width) out.append(width - digits.size(), '0');
  out += digits;
}

}  // namespace

std::string uri_encode(std::string_view s, bool encode_slash) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (unreserved(c) || (c == '/' && !encode_slash)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 0xf]);
    }
  }
  return out;
}

std::string canonical_uri(std::string_view path) {
  if (path.empty() || path.front() != '/') return "/" + uri_encode(path, false);
  return uri_encode(path, false);
}

std::string canonical_query(const name_values& query) {
  name_values encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) {
    encoded.emplace_back(uri_encode(name, true), uri_encode(value, true));
  }
  std::sort(encoded.begin(), encoded.end());  // by encoded name, then encoded value
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out += '&';
    out += name;
    out += '=';
    out += value;
  }
  return out;
}

std::string amz_date(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto secs = floor<seconds>(t);
  const auto day = floor<days>(secs);
  const year_month_day ymd{day};
  const hh_mm_ss hms{secs - day};
  std::string out;
  out.reserve(16);
  append_padded(out, static_cast<int>(ymd.year()), 4);
  append_padded(out, static_cast<unsigned>(ymd.month()), 2);
  append_padded(out, static_cast<unsigned>(ymd.day()), 2);
  out += 'T';
  append_padded(out, hms.hours().count(), 2);
  append_padded(out, hms.minutes().count(), 2);
  append_padded(out, hms.seconds().count(), 2);
  out += 'Z';
  return out;
}

std::string credential_scope(std::string_view yyyymmdd, const credentials& c) {
  std::string out(yyyymmdd);
  out += '/';
  out += c.region;
  out += '/';
  out += c.service;
  out += "/aws4_request";
  return out;
}

std::array<std::uint8_t, 32> signing_key(std::string_view secret, std::string_view yyyymmdd,
                                         std::string_view region, std::string_view service) {
  std::string k_secret = "AWS4";
  k_secret += secret;
  const auto k_date = hmac_sha256(
      {reinterpret_cast<const std::uint8_t*>(k_secret.data()), k_secret.size()}, yyyymmdd);
  std::fill(k_secret.begin(), k_secret.end(), '\0');  // the secret's copy, not left around
  const auto k_region = hmac_sha256(k_date, region);
  const auto k_service = hmac_sha256(k_region, service);
  return hmac_sha256(k_service, "aws4_request");
}

std::string canonical_request(const request& r) {
  const auto headers = canonical_headers(r);
  std::string out = r.method;
  out += '\n';
  out += canonical_uri(r.path);
  out += '\n';
  out += canonical_query(r.query);
  out += '\n';
  for (const auto& [name, value] : headers) {
    out += name;
    out += ':';
    out += value;
    out += '\n';
  }
  out += '\n';
  out += signed_header_list(headers);
  out += '\n';
  out += r.payload_sha256_hex;
  return out;
}

std::string string_to_sign(std::string_view amz_date, std::string_view scope,
                           std::string_view canonical_request) {
  std::string out(algorithm);
  out += '\n';
  out += amz_date;
  out += '\n';
  out += scope;
  out += '\n';
  out += hex(sha256(canonical_request));
  return out;
}

std::string signature(std::span<const std::uint8_t, 32> signing_key,
                      std::string_view string_to_sign) {
  return hex(hmac_sha256(signing_key, string_to_sign));
}

std::string presign_query(const credentials& c, const request& r,
                          std::chrono::system_clock::time_point now, std::chrono::seconds expires) {
  if (expires < std::chrono::seconds{1} || expires > max_presign_expiry) {
    throw std::invalid_argument("presigned URL expiry must be 1 to 604800 seconds");
  }
  const auto date = amz_date(now);
  const auto day = std::string_view(date).substr(0, 8);
  const auto scope = credential_scope(day, c);

  request signed_request = r;
  auto& query = signed_request.query;
  query.emplace_back("X-Amz-Algorithm", std::string(algorithm));
  query.emplace_back("X-Amz-Credential", c.access_key_id + "/" + scope);
  query.emplace_back("X-Amz-Date", date);
  query.emplace_back("X-Amz-Expires", std::to_string(expires.count()));
  query.emplace_back("X-Amz-SignedHeaders", signed_header_list(canonical_headers(r)));

  const auto key = signing_key(c.secret_access_key, day, c.region, c.service);
  const auto sig = signature(key, string_to_sign(date, scope, canonical_request(signed_request)));
  return canonical_query(query) + "&X-Amz-Signature=" + sig;
}

signed_headers sign_headers(const credentials& c, const request& r,
                            std::chrono::system_clock::time_point now) {
  signed_headers out;
  out.amz_date = amz_date(now);
  const auto day = std::string_view(out.amz_date).substr(0, 8);
  const auto scope = credential_scope(day, c);

  request signed_request = r;
  if (c.service == "s3" && !has_header(r, "x-amz-content-sha256")) {
    out.content_sha256 = r.payload_sha256_hex;
    signed_request.headers.emplace_back("x-amz-content-sha256", out.content_sha256);
  }
  signed_request.headers.emplace_back("x-amz-date", out.amz_date);

  const auto canonical = canonical_request(signed_request);
  const auto key = signing_key(c.secret_access_key, day, c.region, c.service);
  out.authorization =
      std::string(algorithm) + " Credential=" + c.access_key_id + "/" + scope +
      ", SignedHeaders=" + signed_header_list(canonical_headers(signed_request)) +
      ", Signature=" + signature(key, string_to_sign(out.amz_date, scope, canonical));
  return out;
}

}  // namespace parley::media::s3
