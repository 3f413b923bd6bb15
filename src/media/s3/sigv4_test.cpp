#include "media/s3/sigv4.hpp"

#include <gtest/gtest.h>

#include <charconv>
#include <map>

#include "media/s3/s3_blob_store.hpp"

#include <set>
#include <stdexcept>
#include <string>

// Expected values are AWS's own published ones, not this code's output:
//  - S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS Signature Version
//    4)" (docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html): the presigned
//    GET of examplebucket/test.txt;
//  - S3 API Reference, "Signature Calculations for the Authorization Header: Transferring Payload
//    in a Single Chunk" (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html):
//    GET Object, PUT Object, GET Bucket Lifecycle, GET Bucket (List Objects);
//  - the signing-key examples of the general reference (docs.aws.amazon.com/general/latest/gr/
//    signature-v4-examples.html and sigv4-calculate-signature.html, now in the IAM user guide);
//  - the Signature V4 test suite as AWS maintains it in awslabs/aws-c-auth
//    (tests/aws-signing-test-suite/v4/<case>/{header,query}-{canonical-request,string-to-sign,
//    signature}.txt), service "service", region us-east-1, 2015-08-30T12:36:00Z, expiry 3600 s.
namespace parley::media::s3 {
namespace {

using namespace std::chrono;

constexpr std::string_view s3_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
constexpr std::string_view suite_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

const system_clock::time_point may_24_2013 = sys_days{year{2013} / 5 / 24};
const system_clock::time_point suite_time = sys_days{year{2015} / 8 / 30} + 12h + 36min;

credentials s3_example() {
  return {"AKIAIOSFODNN7EXAMPLE", std::string(s3_secret), "us-east-1", "s3"};
}
credentials suite_credentials() {
  return {"AKIDEXAMPLE", std::string(suite_secret), "us-east-1", "service"};
}

std::string hex(const std::array<std::uint8_t, 32>& bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const auto b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

std::string signature_in(std::string_view authorization_or_query) {
  const std::string_view marker = "Signature=";
  const auto at = authorization_or_query.rfind(marker);
  if (at == std::string_view::npos) return "(no signature)";
  return std::string(authorization_or_query.substr(at + marker.size()));
}

// ---- building blocks ----

TEST(sigv4, uri_encode_keeps_only_unreserved_bytes) {
  EXPECT_EQ(uri_encode("AZaz09-._~", true), "AZaz09-._~");
  EXPECT_EQ(uri_encode("a b", true), "a%20b");
  EXPECT_EQ(uri_encode("a+b=c&d", true), "a%2Bb%3Dc%26d");
  EXPECT_EQ(uri_encode("test$file.text", true), "test%24file.text");
  EXPECT_EQ(uri_encode("100%*!'()", true), "100%25%2A%21%27%28%29");
  EXPECT_EQ(uri_encode("\xE1\x88\xB4", true), "%E1%88%B4");  // U+1234, upper-case hex
  EXPECT_EQ(uri_encode("a/b", true), "a%2Fb");
  EXPECT_EQ(uri_encode("a/b", false), "a/b");
  EXPECT_EQ(uri_encode("", true), "");
}

TEST(sigv4, canonical_uri_encodes_once_and_does_not_normalise) {
  EXPECT_EQ(canonical_uri(""), "/");
  EXPECT_EQ(canonical_uri("/"), "/");
  EXPECT_EQ(canonical_uri("/bucket/key name"), "/bucket/key%20name");
  EXPECT_EQ(canonical_uri("/bucket/a%20b"), "/bucket/a%2520b");  // raw input: '%' is data
  EXPECT_EQ(canonical_uri("/bucket//./key"), "/bucket//./key");  // S3 keeps the path as is
  EXPECT_EQ(canonical_uri("bucket/key"), "/bucket/key");
}

TEST(sigv4, canonical_query_sorts_by_encoded_name_then_value) {
  EXPECT_EQ(canonical_query({}), "");
  EXPECT_EQ(canonical_query({{"prefix", "J"}, {"max-keys", "2"}}), "max-keys=2&prefix=J");
  EXPECT_EQ(canonical_query({{"lifecycle", ""}}), "lifecycle=");
  EXPECT_EQ(canonical_query({{"b", "2"}, {"a", "z"}, {"a", "y"}, {"A", "x"}}), "A=x&a=y&a=z&b=2");
  // Sorted after encoding: "%E1%88%B4" < "Param" < "Param-3" (get-vanilla-query-order-encoded).
  EXPECT_EQ(
      canonical_query({{"Param-3", "Value3"}, {"Param", "Value2"}, {"\xE1\x88\xB4", "Value1"}}),
      "%E1%88%B4=Value1&Param=Value2&Param-3=Value3");
  EXPECT_EQ(canonical_query({{"k", "a b/c+d"}}), "k=a%20b%2Fc%2Bd");
}

TEST(sigv4, amz_date_is_utc_to_the_second) {
  EXPECT_EQ(amz_date(may_24_2013), "20130524T000000Z");
  EXPECT_EQ(amz_date(suite_time), "20150830T123600Z");
  EXPECT_EQ(amz_date(sys_days{year{2026} / 11 / 29} + 8h + 5min + 3s + 999ms), "20261129T080503Z");
  EXPECT_EQ(credential_scope("20130524", s3_example()), "20130524/us-east-1/s3/aws4_request");
}

TEST(sigv4, signing_key_matches_the_published_derivations) {
  // signature-v4-examples.html ("Examples of how to derive a signing key").
  EXPECT_EQ(hex(signing_key(suite_secret, "20120215", "us-east-1", "iam")),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
  // sigv4-calculate-signature.html (the IAM ListUsers walkthrough).
  const auto key = signing_key(suite_secret, "20150830", "us-east-1", "iam");
  EXPECT_EQ(hex(key), "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
  EXPECT_EQ(signature(key,
                      "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
                      "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

TEST(sigv4, iam_list_users_walkthrough_canonical_request) {
  request r;
  r.method = "GET";
  r.host = "iam.amazonaws.com";
  r.path = "/";
  r.query = {{"Action", "ListUsers"}, {"Version", "2010-05-08"}};
  r.headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
               {"X-Amz-Date", "20150830T123600Z"}};
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto canonical = canonical_request(r);
  EXPECT_EQ(canonical,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n"
            "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
            "host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "content-type;host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(string_to_sign("20150830T123600Z", "20150830/us-east-1/iam/aws4_request", canonical),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
  // Through sign_headers (not service s3: no x-amz-content-sha256 added).
  r.headers.pop_back();
  const auto signed_ =
      sign_headers({"AKIDEXAMPLE", std::string(suite_secret), "us-east-1", "iam"}, r, suite_time);
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, "
            "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
  EXPECT_EQ(signed_.content_sha256, "");
}

// ---- S3's examples ----

TEST(sigv4, s3_presigned_get_example) {
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  const auto query = presign_query(s3_example(), r, may_24_2013, 86400s);
  EXPECT_EQ(query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");

  // The page's intermediate values: the canonical request and the string to sign.
  request with_auth = r;
  with_auth.query = {
      {"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
      {"X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"},
      {"X-Amz-Date", "20130524T000000Z"},
      {"X-Amz-Expires", "86400"},
      {"X-Amz-SignedHeaders", "host"}};
  const auto canonical = canonical_request(with_auth);
  EXPECT_EQ(canonical,
            "GET\n/test.txt\n"
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2F"
            "us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&"
            "X-Amz-SignedHeaders=host\n"
            "host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD");
  EXPECT_EQ(string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
}

TEST(sigv4, s3_get_object_example) {
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.headers = {{"Range", "bytes=0-9"}};
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto signed_ = sign_headers(s3_example(), r, may_24_2013);
  EXPECT_EQ(signed_.amz_date, "20130524T000000Z");
  EXPECT_EQ(signed_.content_sha256, empty_payload_sha256);  // S3: added and signed
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");

  request as_sent = r;
  as_sent.headers.emplace_back("x-amz-content-sha256", empty_payload_sha256);
  as_sent.headers.emplace_back("x-amz-date", "20130524T000000Z");
  const auto canonical = canonical_request(as_sent);
  EXPECT_EQ(
      canonical,
      "GET\n/test.txt\n\n"
      "host:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n\n"
      "host;range;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
}

TEST(sigv4, s3_put_object_example) {
  request r;
  r.method = "PUT";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test$file.text";  // raw: the '$' is encoded once, as %24
  r.headers = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
               {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
  // SHA-256 of the body "Welcome to Amazon S3."
  r.payload_sha256_hex = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
  const auto signed_ = sign_headers(s3_example(), r, may_24_2013);
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
            "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
  EXPECT_EQ(signed_.content_sha256, r.payload_sha256_hex);

  request as_sent = r;
  as_sent.headers.emplace_back("x-amz-content-sha256", r.payload_sha256_hex);
  as_sent.headers.emplace_back("x-amz-date", "20130524T000000Z");
  const auto canonical = canonical_request(as_sent);
  EXPECT_EQ(
      canonical,
      "PUT\n/test%24file.text\n\n"
      "date:Fri, 24 May 2013 00:00:00 GMT\nhost:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
      "x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
      "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
      "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  EXPECT_EQ(string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
}

TEST(sigv4, s3_get_bucket_lifecycle_example) {
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"lifecycle", ""}};
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto signed_ = sign_headers(s3_example(), r, may_24_2013);
  EXPECT_EQ(signature_in(signed_.authorization),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");

  request as_sent = r;
  as_sent.headers = {{"x-amz-content-sha256", std::string(empty_payload_sha256)},
                     {"x-amz-date", "20130524T000000Z"}};
  EXPECT_EQ(string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request",
                           canonical_request(as_sent)),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
}

TEST(sigv4, s3_list_objects_example) {
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};  // out of order on purpose: sorting is ours
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto signed_ = sign_headers(s3_example(), r, may_24_2013);
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");

  request as_sent = r;
  as_sent.headers = {{"x-amz-content-sha256", std::string(empty_payload_sha256)},
                     {"x-amz-date", "20130524T000000Z"}};
  const auto canonical = canonical_request(as_sent);
  EXPECT_EQ(
      canonical,
      "GET\n/\nmax-keys=2&prefix=J\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n\n"
      "host;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
}

TEST(sigv4, s3_content_sha256_given_by_the_caller_is_not_added_twice) {
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.headers = {{"Range", "bytes=0-9"}, {"X-Amz-Content-SHA256", std::string(empty_payload_sha256)}};
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto signed_ = sign_headers(s3_example(), r, may_24_2013);
  EXPECT_EQ(signed_.content_sha256, "");  // the caller sends its own
  EXPECT_EQ(signature_in(signed_.authorization),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// ---- the Signature V4 test suite (awslabs/aws-c-auth, tests/aws-signing-test-suite/v4) ----

struct suite_case {
  const char* name;
  std::string path;
  name_values query;
  name_values headers;  // besides Host
  const char* header_signature;
  const char* query_signature;
};

const std::string unreserved_chars =
    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

TEST(sigv4, test_suite_get_cases) {
  const suite_case cases[] = {
      {"get-vanilla",
       "/",
       {},
       {},
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
       "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d"},
      {"get-vanilla-query-order-key-case",
       "/",
       {{"Param2", "value2"}, {"Param1", "value1"}},
       {},
       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
       "86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5"},
      {"get-vanilla-query-unreserved",
       "/",
       {{unreserved_chars, unreserved_chars}},
       {},
       "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
       "8e76a88a7433637b12778d5592799b29ad21ecd6cf6325051c21d86f0acda2bf"},
      {"get-vanilla-query-order-encoded",
       "/",
       {{"Param-3", "Value3"}, {"Param", "Value2"}, {"\xE1\x88\xB4", "Value1"}},
       {},
       "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
       "c5f1848ceec943ac2ca68ee720460c23aaae30a2300586597ada94c4a65e4787"},
      {"get-utf8",
       "/\xE1\x88\xB4",
       {},
       {},
       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
       "10eae3f14a260bd3911cc6d008d3c576d143b05b62f09782a7a4b37f52178e44"},
      {"get-space-normalized",
       "/example space/",
       {},
       {},
       "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
       "7a1f416954786484c9824d93c1f26ef64acb9b1b6c9154d08c9f07d0e394abf6"},
      {"get-header-value-trim",
       "/",
       {},
       {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
       "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
       "e7bb0fd515e125e1aec2ecc4c0c17484fb06f6846b927c35e46005dd3df3acd4"},
      {"get-header-key-duplicate",
       "/",
       {},
       {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
       "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
       "3349ee0b81b4b589da0ff28a395c3591e04de515651dd74f298fa992d1507a97"},
      {"get-header-value-order",
       "/",
       {},
       {{"My-Header1", "value4"},
        {"My-Header1", "value1"},
        {"My-Header1", "value3"},
        {"My-Header1", "value2"}},
       "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
       "313720e71ca6202fdcfa9b20f88de01a4eb0638a83c833b1c184359a4eda864e"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    request r;
    r.method = "GET";
    r.host = "example.amazonaws.com";
    r.path = c.path;
    r.query = c.query;
    r.headers = c.headers;
    r.payload_sha256_hex = std::string(empty_payload_sha256);
    const auto signed_ = sign_headers(suite_credentials(), r, suite_time);
    EXPECT_EQ(signature_in(signed_.authorization), c.header_signature);
    EXPECT_EQ(signed_.amz_date, "20150830T123600Z");
    const auto query = presign_query(suite_credentials(), r, suite_time, 3600s);
    EXPECT_EQ(signature_in(query), c.query_signature);
  }
}

TEST(sigv4, test_suite_get_vanilla_in_full) {
  request r;
  r.method = "GET";
  r.host = "example.amazonaws.com";
  r.path = "/";
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto signed_ = sign_headers(suite_credentials(), r, suite_time);
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");

  request as_sent = r;
  as_sent.headers = {{"X-Amz-Date", "20150830T123600Z"}};
  const auto canonical = canonical_request(as_sent);
  EXPECT_EQ(canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(
      string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", canonical),
      "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
      "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");

  EXPECT_EQ(presign_query(suite_credentials(), r, suite_time, 3600s),
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
            "&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d");
}

TEST(sigv4, test_suite_post_x_www_form_urlencoded) {
  request r;
  r.method = "POST";
  r.host = "example.amazonaws.com";
  r.path = "/";
  r.headers = {{"Content-Type", "application/x-www-form-urlencoded"}, {"Content-Length", "13"}};
  // SHA-256 of the body "Param1=value1"; the suite signs it ("sign_body": true).
  r.payload_sha256_hex = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";

  const auto query = presign_query(suite_credentials(), r, suite_time, 3600s);
  EXPECT_EQ(query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request"
            "&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600"
            "&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"
            "&X-Amz-Signature=89a40deed0f26f9461242825a082d2222717248abc7ab41f552ad84a94ad46e9");

  // The header form signs x-amz-content-sha256 too, as the suite's request carries it.
  request with_hash = r;
  with_hash.headers.emplace_back("x-amz-content-sha256", r.payload_sha256_hex);
  const auto signed_ = sign_headers(suite_credentials(), with_hash, suite_time);
  EXPECT_EQ(signed_.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, "
            "Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b");
}

// ---- what the signature covers ----

request minio_put() {
  request r;
  r.method = "PUT";
  r.host = "minio.local:9000";
  r.path = "/parley-media/0123456789abcdef0123456789abcdef";
  r.headers = {{"Content-Length", "1048592"}};
  return r;
}

TEST(sigv4, every_signed_part_changes_the_presigned_signature) {
  const credentials c{"minioadmin", "minioadmin-secret", "us-east-1", "s3"};
  const auto now = sys_days{year{2026} / 11 / 29} + 10h;
  const auto base = signature_in(presign_query(c, minio_put(), now, 900s));
  ASSERT_EQ(base.size(), 64u);

  std::set<std::string> seen{base};
  const auto expect_new = [&](const std::string& what, const std::string& sig) {
    EXPECT_TRUE(seen.insert(sig).second) << what << " did not change the signature";
  };
  auto r = minio_put();
  r.method = "GET";
  expect_new("method", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.path += "0";
  expect_new("path", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.host = "minio.local:9001";
  expect_new("host", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.headers[0].second = "1048593";
  expect_new("signed header value", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.headers.emplace_back("x-amz-meta-owner", "42");
  expect_new("added header", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.query.emplace_back("partNumber", "1");
  expect_new("query", signature_in(presign_query(c, r, now, 900s)));
  r = minio_put();
  r.payload_sha256_hex = std::string(empty_payload_sha256);
  expect_new("payload hash", signature_in(presign_query(c, r, now, 900s)));
  expect_new("expiry", signature_in(presign_query(c, minio_put(), now, 901s)));
  expect_new("time", signature_in(presign_query(c, minio_put(), now + 1s, 900s)));
  expect_new("secret", signature_in(presign_query({c.access_key_id, "other", c.region, c.service},
                                                  minio_put(), now, 900s)));
  expect_new("region", signature_in(presign_query(
                           {c.access_key_id, c.secret_access_key, "eu-west-1", c.service},
                           minio_put(), now, 900s)));
  // Header names are case-insensitive: the same request, differently written, signs the same.
  r = minio_put();
  r.headers[0].first = "content-LENGTH";
  EXPECT_EQ(signature_in(presign_query(c, r, now, 900s)), base);
}

TEST(sigv4, every_signed_part_changes_the_header_signature) {
  const credentials c{"minioadmin", "minioadmin-secret", "us-east-1", "s3"};
  const auto now = sys_days{year{2026} / 11 / 29} + 10h;
  request del;
  del.method = "DELETE";
  del.host = "minio.local:9000";
  del.path = "/parley-media/0123456789abcdef0123456789abcdef";
  del.payload_sha256_hex = std::string(empty_payload_sha256);
  const auto base = sign_headers(c, del, now);
  EXPECT_EQ(base.content_sha256, empty_payload_sha256);
  EXPECT_NE(base.authorization.find("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"),
            std::string::npos);

  auto r = del;
  r.method = "GET";
  EXPECT_NE(signature_in(sign_headers(c, r, now).authorization), signature_in(base.authorization));
  r = del;
  r.path = "/parley-media/0123456789abcdef0123456789abcdee";
  EXPECT_NE(signature_in(sign_headers(c, r, now).authorization), signature_in(base.authorization));
  r = del;
  r.headers.emplace_back("Range", "bytes=0-9");
  EXPECT_NE(signature_in(sign_headers(c, r, now).authorization), signature_in(base.authorization));
  EXPECT_NE(signature_in(sign_headers(c, del, now + 1s).authorization),
            signature_in(base.authorization));
}

TEST(sigv4, presign_expiry_is_one_second_to_seven_days) {
  const credentials c = s3_example();
  request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  EXPECT_THROW((void)presign_query(c, r, may_24_2013, 0s), std::invalid_argument);
  EXPECT_THROW((void)presign_query(c, r, may_24_2013, -5s), std::invalid_argument);
  EXPECT_THROW((void)presign_query(c, r, may_24_2013, 604801s), std::invalid_argument);
  EXPECT_NE(presign_query(c, r, may_24_2013, 1s).find("X-Amz-Expires=1&"), std::string::npos);
  EXPECT_NE(presign_query(c, r, may_24_2013, 604800s).find("X-Amz-Expires=604800&"),
            std::string::npos);
}


// ---- the multipart URLs s3_blob_store presigns ----

// A presigned URL taken apart: its path, its query (decoded) and the time and expiry it says.
struct presigned_url {
  std::string path;
  std::string query;  // as sent
  std::map<std::string, std::string> params;
};

std::string decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      unsigned v = 0;
      std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      out.push_back(static_cast<char>(v));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

presigned_url split(const std::string& url, std::string_view base) {
  presigned_url out;
  EXPECT_TRUE(url.starts_with(base)) << url;
  const auto q = url.find('?');
  out.path = url.substr(base.size(), q - base.size());
  out.query = url.substr(q + 1);
  std::string_view rest = out.query;
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    out.params[decoded(pair.substr(0, eq))] = decoded(pair.substr(eq + 1));
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
  }
  return out;
}

// Whether `u` is exactly the presigned URL of (method, its path, its own non-auth query, the
// content-length given or none) by `c`: the query is signed again from those and compared.
bool signs(const presigned_url& u, const credentials& c, const std::string& method,
           std::optional<std::uint64_t> content_length) {
  request r;
  r.method = method;
  r.host = "127.0.0.1:9000";
  r.path = decoded(u.path);
  for (const auto& [name, value] : u.params) {
    if (!name.starts_with("X-Amz-")) r.query.emplace_back(name, value);
  }
  if (content_length) r.headers = {{"content-length", std::to_string(*content_length)}};
  const auto& date = u.params.at("X-Amz-Date");  // YYYYMMDDTHHMMSSZ
  const auto num = [&](std::size_t at, std::size_t n) {
    int v = 0;
    std::from_chars(date.data() + at, date.data() + at + n, v);
    return v;
  };
  const system_clock::time_point when =
      sys_days{year{num(0, 4)} / num(4, 2) / num(6, 2)} + hours{num(9, 2)} + minutes{num(11, 2)} +
      seconds{num(13, 2)};
  const seconds expires{std::stoll(u.params.at("X-Amz-Expires"))};
  return presign_query(c, r, when, expires) == u.query;
}

// The store the URL tests sign with: AWS's example keys, bucket "media" at `store_base`.
const std::string store_base = "http://127.0.0.1:9000";
media::s3_options example_store_options() {
  media::s3_options o;
  o.endpoint = store_base;
  o.bucket = "media";
  o.credentials = s3_example();
  return o;
}

// A grant of account 7 for `size` bytes, expiring 15 minutes from now.
media::upload_grant example_grant(std::uint64_t size) {
  media::upload_grant grant;
  grant.id = "0123456789abcdef0123456789abcdef";
  grant.owner = 7;
  grant.size = size;
  grant.expires = system_clock::now() + 15min;
  return grant;
}

// A presigned URL lives from 1 s (SigV4's least) to 7 days (its most), whatever the grant says.
TEST(s3_blob_store_urls, a_url_lives_one_second_to_seven_days) {
  media::s3_blob_store store(example_store_options());
  const std::string& base = store_base;
  media::upload_grant grant = example_grant(1000);
  auto expires_of = [&](const std::string& url) {
    return std::stoll(split(url, base).params.at("X-Amz-Expires"));
  };
  grant.expires = system_clock::now() + 30 * 24h;
  EXPECT_EQ(expires_of(store.upload_url(grant)), 604800);
  EXPECT_EQ(expires_of(store.download_url(grant.id, 7, grant.expires)), 604800);
  grant.expires = system_clock::now() - 1min;
  EXPECT_EQ(expires_of(store.upload_url(grant)), 1);
  grant.expires = system_clock::now() + 15min;
  const auto quarter = expires_of(store.upload_url(grant));
  EXPECT_GE(quarter, 899);
  EXPECT_LE(quarter, 900);
}

TEST(s3_blob_store_urls, a_large_blob_is_a_multipart_upload_of_8_mib_parts_each_length_signed) {
  const media::s3_options o = example_store_options();
  media::s3_blob_store store(o);
  const std::string& base = store_base;
  media::upload_grant grant = example_grant(100'024'416);  // the largest file's ciphertext

  const auto start = split(store.multipart_start_url(grant), base);
  EXPECT_EQ(start.path, "/media/" + grant.id);
  EXPECT_TRUE(start.params.contains("uploads"));
  EXPECT_TRUE(signs(start, o.credentials, "POST", std::nullopt));
  EXPECT_FALSE(signs(start, o.credentials, "PUT", std::nullopt)) << "only for a POST";

  // An AWS-style UploadId: '/', '+' and '=' must reach the signature encoded.
  const std::string upload_id = "VXBsb2FkIElE+Zm9y/ZWxldmF0aW9u=";
  const auto urls = store.multipart_part_urls(grant, upload_id);
  ASSERT_TRUE(urls);
  EXPECT_EQ(urls->part_size, 8u * 1024 * 1024);
  ASSERT_EQ(urls->parts.size(), 12u);
  for (std::size_t i = 0; i < urls->parts.size(); ++i) {
    const auto part = split(urls->parts[i], base);
    EXPECT_EQ(part.params.at("partNumber"), std::to_string(i + 1));
    EXPECT_EQ(part.params.at("uploadId"), upload_id);
    EXPECT_NE(part.query.find("uploadId=VXBsb2FkIElE%2BZm9y%2FZWxldmF0aW9u%3D"),
              std::string::npos);
    EXPECT_EQ(part.params.at("X-Amz-SignedHeaders"), "content-length;host");
    const std::uint64_t length =
        i + 1 < urls->parts.size() ? urls->part_size : grant.size - 11 * urls->part_size;
    EXPECT_TRUE(signs(part, o.credentials, "PUT", length)) << "part " << i + 1;
    EXPECT_FALSE(signs(part, o.credentials, "PUT", length + 1)) << "another length";
  }
  const auto complete = split(urls->complete, base);
  EXPECT_EQ(complete.params.at("uploadId"), upload_id);
  EXPECT_FALSE(complete.params.contains("partNumber"));
  EXPECT_TRUE(signs(complete, o.credentials, "POST", std::nullopt));

  // One part's worth or less: a single PUT, no multipart start.
  grant.size = 8 * 1024 * 1024;
  EXPECT_TRUE(store.multipart_start_url(grant).empty());
  grant.size = 8 * 1024 * 1024 + 1;
  EXPECT_FALSE(store.multipart_start_url(grant).empty());
  const auto two = store.multipart_part_urls(grant, "abc");
  ASSERT_TRUE(two);
  ASSERT_EQ(two->parts.size(), 2u);
  EXPECT_TRUE(signs(split(two->parts[1], base), o.credentials, "PUT", 1));
}

}  // namespace
}  // namespace parley::media::s3
