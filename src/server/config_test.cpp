#include "server/config.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace parley::server {
namespace {

std::filesystem::path write_temp(const std::string& name, const std::string& text) {
  auto p = std::filesystem::temp_directory_path() / ("parley_config_test_" + name + ".toml");
  std::ofstream(p) << text;
  return p;
}

TEST(config, parse_listen) {
  config c;
  parse_listen("0.0.0.0:9000", c);
  EXPECT_EQ(c.listen_host, "0.0.0.0");
  EXPECT_EQ(c.listen_port, 9000);
  parse_listen("[::1]:0", c);
  EXPECT_EQ(c.listen_host, "::1");
  EXPECT_EQ(c.listen_port, 0);
  EXPECT_THROW(parse_listen("localhost", c), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:70000", c), std::invalid_argument);
  EXPECT_THROW(parse_listen("127.0.0.1:80x", c), std::invalid_argument);
}

TEST(config, toml_file_overrides_defaults) {
  auto p = write_temp("ok", R"(
listen = "127.0.0.1:9100"
data = "/tmp/parley-data"
threads = 3
fsync = false
[limits]
max_payload_bytes = 1000
max_frame_bytes = 4096
max_outbound_frames = 10
auth_timeout_ms = 500
)");
  config c = load_config_file(p, config{});
  EXPECT_EQ(c.listen_port, 9100);
  EXPECT_EQ(c.data_dir, "/tmp/parley-data");
  EXPECT_EQ(c.threads, 3u);
  EXPECT_FALSE(c.fsync);
  EXPECT_EQ(c.limits.max_payload_bytes, 1000u);
  EXPECT_EQ(c.limits.max_frame_bytes, 4096u);
  EXPECT_EQ(c.max_outbound_frames, 10u);
  EXPECT_EQ(c.auth_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(c.max_in_flight, config{}.max_in_flight);  // untouched
}

TEST(config, bad_values_are_rejected_with_the_key_named) {
  auto wrong_type = write_temp("type", "threads = \"many\"\n");
  EXPECT_THROW(load_config_file(wrong_type, config{}), std::runtime_error);
  auto negative = write_temp("neg", "[limits]\nmax_payload_bytes = -1\n");
  try {
    load_config_file(negative, config{});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("max_payload_bytes"), std::string::npos);
  }
  auto syntax = write_temp("syntax", "listen = \n");
  EXPECT_THROW(load_config_file(syntax, config{}), std::runtime_error);
  auto frame_too_small = write_temp("frame", "[limits]\nmax_frame_bytes = 1000\n");
  EXPECT_THROW(load_config_file(frame_too_small, config{}), std::runtime_error);
}

}  // namespace
}  // namespace parley::server
