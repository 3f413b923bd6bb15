#include "server_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "listening_process.hpp"

extern char** environ;

namespace parley::test {

namespace fs = std::filesystem;

server_process::server_process(std::vector<std::string> extra_args, std::string config_toml,
                               std::vector<std::string> extra_env,
                               std::vector<std::string> command_prefix)
    : args_(std::move(extra_args)), prefix_(std::move(command_prefix)) {
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& x : extra_env) replaced = replaced || x.rfind(name + "=", 0) == 0;
    if (!replaced) env_.push_back(entry);
  }
  env_.insert(env_.end(), extra_env.begin(), extra_env.end());
  std::random_device rd;
  data_dir_ = fs::temp_directory_path() /
              ("parley_it_" + std::to_string(rd()) + std::to_string(::getpid()));
  fs::create_directories(data_dir_);
  if (!config_toml.empty()) {
    config_file_ = data_dir_ / "parleyd.toml";
    std::ofstream(config_file_) << config_toml;
  }
  spawn();
}

server_process::~server_process() {
  if (pid_ > 0) kill9();
  std::error_code ec;
  fs::remove_all(data_dir_, ec);
}

void server_process::spawn() {
  std::vector<std::string> argv_s = {
      PARLEYD_PATH, "--listen", "127.0.0.1:0", "--data", (data_dir_ / "data").string(),
      "--threads",  "2",        "--log-level", "warn"};
  if (!config_file_.empty()) {
    argv_s.push_back("--config");
    argv_s.push_back(config_file_.string());
  }
  argv_s.insert(argv_s.end(), args_.begin(), args_.end());
  argv_s.insert(argv_s.begin(), prefix_.begin(), prefix_.end());
  const auto p = test_support::spawn_listening(std::move(argv_s), env_);
  pid_ = p.pid;
  port_ = p.port;
}

void server_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int server_process::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

void server_process::restart() {
  if (pid_ > 0) terminate();
  spawn();
}

void server_process::restart(const std::string& config_toml) {
  if (pid_ > 0) terminate();
  config_file_ = data_dir_ / "parleyd.toml";
  std::ofstream(config_file_) << config_toml;
  spawn();
}

long server_process::rss_kb() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long kb = 0;
      in >> kb;
      return kb;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return -1;
}

std::string http_get(unsigned short port, const std::string& path) {
  namespace asio = boost::asio;
  try {
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    const std::string req =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    asio::write(s, asio::buffer(req));
    std::string response;
    boost::system::error_code ec;
    char buf[4096];
    for (;;) {
      const std::size_t n = s.read_some(asio::buffer(buf), ec);
      response.append(buf, n);
      if (ec) break;
    }
    const auto body = response.find("\r\n\r\n");
    return body == std::string::npos ? "" : response.substr(body + 4);
  } catch (const std::exception&) {
    return "";
  }
}

std::vector<std::string> env_for_rss_bounds() {
  std::vector<std::string> env;
#if defined(__SANITIZE_ADDRESS__)
  const char* asan = std::getenv("ASAN_OPTIONS");
  env.push_back(std::string("ASAN_OPTIONS=") + (asan ? asan : "") +
                ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0");
#endif
  return env;
}

long long metric(unsigned short port, const std::string& name) {
  const auto text = http_get(port, "/metrics");
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + name.size() + 2));
}

namespace {

// Everything `fd` receives until the peer closes it or `deadline` passes. Each wait is a
// poll() bounded by the time left: a blocking read would wait past SO_RCVTIMEO (asio's
// read_some polls again, without a timeout, when the receive times out).
std::string read_until_closed(int fd, std::chrono::steady_clock::time_point deadline) {
  std::string out;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return out;  // the deadline passed (or poll failed)
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;  // closed (or reset)
    out.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace

idle_outcome wait_for_close(unsigned short port, const std::string& bytes,
                            std::chrono::seconds limit) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  boost::system::error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  // The server may answer before reading it all (a request over a limit).
  if (!bytes.empty()) asio::write(s, asio::buffer(bytes), ec);
  const auto since = std::chrono::steady_clock::now();
  idle_outcome out;
  out.received = read_until_closed(s.native_handle(), since + limit);
  out.closed_after = std::chrono::steady_clock::now() - since;
  return out;
}

std::string http_exchange(unsigned short port, const std::string& request) {
  return wait_for_close(port, request, std::chrono::seconds(10)).received;
}

}  // namespace parley::test
