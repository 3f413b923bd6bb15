// parleyd: the parley server. Embedded mode: one process, RocksDB under --data.
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "common/log.hpp"
#include "server/config.hpp"
#include "server/server.hpp"
#include "wire/frame_codec.hpp"

namespace {

constexpr const char* usage =
    "usage: parleyd [--listen HOST:PORT] [--data DIR] [--threads N] [--config FILE]\n"
    "               [--no-fsync] [--log-level debug|info|warn|error] [--metrics-listen HOST:PORT]\n"
    "               [--tls-cert FILE --tls-key FILE] [--allow-plaintext]\n"
    "               [--media-listen HOST:PORT] [--media-url URL]\n"
    "               [--node-id N] [--store postgresql://...] [--presence redis://...]\n"
    "  --listen   address to serve WebSocket (/v2/ws) and HTTP on (default 127.0.0.1:8080;\n"
    "             port 0 picks a free port, printed on start)\n"
    "  --data     data directory (default ./data)\n"
    "  --threads  I/O threads, 1-256 (default: one per core)\n"
    "  --config   TOML file (see docs/operations.md); flags override it\n"
    "  --no-fsync do not fsync writes (benchmarks only: a crash can lose acknowledged messages)\n"
    "  --metrics-listen  serve GET /metrics (and /healthz) on this address only, e.g. a\n"
    "             loopback one, instead of on --listen\n"
    "  --tls-cert FILE --tls-key FILE  serve wss:// and https:// (PEM certificate chain and\n"
    "             key; reloaded on SIGHUP). Without them, plain ws:// is served on loopback\n"
    "             addresses only\n"
    "  --allow-plaintext  serve plain ws:// on any address (behind a TLS-terminating proxy)\n"
    "  --media-listen  the blob server's address (default: the --listen host, its port + 1;\n"
    "             port 0 picks a free port)\n"
    "  --media-url  the base URL clients reach the blob server at (default http://ADDRESS)\n"
    "  --node-id  this node's id in a cluster, 0-1023, unique per node (default 0)\n"
    "  --store    the cluster's shared store, a PostgreSQL URI (default: RocksDB under --data)\n"
    "  --presence the cluster's presence map and node bus, a Redis URI (default: this\n"
    "             process only; needs --store)\n";

}  // namespace

int main(int argc, char** argv) {
  using parley::server::config;
  parley::wire::silence_protobuf_logging();
  try {
    config cfg;
    // The config file first, so that flags override it wherever they appear.
    for (int i = 1; i + 1 < argc; ++i) {
      if (std::strcmp(argv[i], "--config") == 0)
        cfg = parley::server::load_config_file(argv[i + 1], cfg);
    }
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--listen") {
        parley::server::parse_listen(value(), cfg);
      } else if (arg == "--data") {
        cfg.data_dir = value();
      } else if (arg == "--threads") {
        // Digits only, and the same range as `threads` in the config file (std::stoul answered
        // "--threads many" with its own name, "stoul").
        const std::string v = value();
        unsigned n = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || n == 0 || n > 256)
          throw std::invalid_argument("--threads must be 1-256, got '" + v + "'");
        cfg.threads = n;
      } else if (arg == "--tls-cert") {
        cfg.tls_cert = value();
      } else if (arg == "--tls-key") {
        cfg.tls_key = value();
      } else if (arg == "--allow-plaintext") {
        cfg.allow_plaintext = true;
      } else if (arg == "--metrics-listen") {
        parley::server::parse_metrics_listen(value(), cfg);
      } else if (arg == "--media-listen") {
        parley::server::parse_media_listen(value(), cfg);
      } else if (arg == "--media-url") {
        cfg.media.public_url = value();
        if (cfg.media.public_url.rfind("http://", 0) != 0 &&
            cfg.media.public_url.rfind("https://", 0) != 0)
          throw std::invalid_argument("--media-url must start with http:// or https://");
      } else if (arg == "--node-id") {
        const std::string v = value();
        unsigned n = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || n > 1023)
          throw std::invalid_argument("--node-id must be 0-1023, got '" + v + "'");
        cfg.node_id = n;
      } else if (arg == "--store") {
        cfg.store_url = value();
      } else if (arg == "--presence") {
        cfg.presence_url = value();
      } else if (arg == "--config") {
        value();  // applied above
      } else if (arg == "--no-fsync") {
        cfg.fsync = false;
      } else if (arg == "--log-level") {
        const std::string v = value();
        if (v == "debug")
          parley::set_log_level(parley::log_level::debug);
        else if (v == "info")
          parley::set_log_level(parley::log_level::info);
        else if (v == "warn")
          parley::set_log_level(parley::log_level::warn);
        else if (v == "error")
          parley::set_log_level(parley::log_level::error);
        else
          throw std::invalid_argument("unknown log level " + v);
      } else if (arg == "--help" || arg == "-h") {
        std::fputs(usage, stdout);
        return 0;
      } else {
        throw std::invalid_argument("unknown option " + arg);
      }
    }

    parley::server::check_backends(cfg);
    parley::server::check_transport(cfg);
    parley::server::server server(cfg);
    const auto endpoint = server.start();
    // Tests and scripts read this line to learn the port.
    // One line only: whoever started us may stop reading stdout after it.
    std::string metrics;
    if (auto m = server.metrics_endpoint()) {
      metrics = "; metrics on " + m->address().to_string() + ":" + std::to_string(m->port());
    }
    if (auto m = server.media_endpoint()) {
      metrics += "; media on " + m->address().to_string() + ":" + std::to_string(m->port());
    }
    std::printf("parleyd listening on %s:%u (%s, data %s%s)\n",
                endpoint.address().to_string().c_str(), endpoint.port(),
                cfg.tls_cert.empty() ? "ws://" : "wss://", cfg.data_dir.string().c_str(),
                metrics.c_str());
    std::fflush(stdout);
    server.wait();
    return 0;
  } catch (const std::invalid_argument& e) {
    std::cerr << "parleyd: " << e.what() << "\n" << usage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "parleyd: " << e.what() << '\n';
    return 1;
  }
}
