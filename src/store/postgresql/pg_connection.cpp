#include "store/postgresql/pg_connection.hpp"

#include <poll.h>

#include <cerrno>
#include <charconv>

#include "common/log.hpp"

namespace parley::store::pg {

params& params::add(std::uint64_t v) {
  values_.push_back({std::to_string(v), false, false});
  return *this;
}
params& params::add(std::int64_t v) {
  values_.push_back({std::to_string(v), false, false});
  return *this;
}
params& params::add(bool v) {
  values_.push_back({v ? "t" : "f", false, false});
  return *this;
}
params& params::text(std::string_view v) {
  values_.push_back({std::string(v), false, false});
  return *this;
}
params& params::bytes(std::string_view v) {
  values_.push_back({std::string(v), true, false});
  return *this;
}
params& params::null() {
  values_.push_back({{}, false, true});
  return *this;
}

std::string_view rows::text(int row, int col) const {
  return {PQgetvalue(result_.get(), row, col),
          static_cast<std::size_t>(PQgetlength(result_.get(), row, col))};
}

std::uint64_t rows::u64(int row, int col) const {
  if (is_null(row, col)) return 0;
  const auto t = text(row, col);
  std::int64_t v = 0;
  std::from_chars(t.data(), t.data() + t.size(), v);
  return static_cast<std::uint64_t>(v);
}

bool rows::boolean(int row, int col) const {
  const auto t = text(row, col);
  return !t.empty() && t[0] == 't';
}

std::string rows::bytes(int row, int col) const {
  if (is_null(row, col)) return {};
  // Text form of BYTEA: "\x" and two hex digits a byte (bytea_output = hex, the default).
  const auto t = text(row, col);
  if (t.size() < 2 || t[0] != '\\' || t[1] != 'x') return {};
  std::string out;
  out.reserve((t.size() - 2) / 2);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 0;
  };
  for (std::size_t i = 2; i + 1 < t.size(); i += 2)
    out.push_back(static_cast<char>(nibble(t[i]) << 4 | nibble(t[i + 1])));
  return out;
}

std::vector<std::uint64_t> rows::bigints(int row, int col) const {
  std::vector<std::uint64_t> out;
  if (is_null(row, col)) return out;
  // Text form: {1,2,3} ({} when empty); integers have no quotes or NULLs here.
  const auto t = text(row, col);
  std::size_t i = 0;
  while (i < t.size()) {
    if (t[i] < '0' || t[i] > '9') {
      ++i;
      continue;
    }
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(t.data() + i, t.data() + t.size(), v);
    out.push_back(v);
    i = static_cast<std::size_t>(end - t.data());
  }
  return out;
}

std::uint64_t rows::affected() const {
  const char* n = PQcmdTuples(result_.get());
  std::uint64_t v = 0;
  std::from_chars(n, n + std::char_traits<char>::length(n), v);
  return v;
}

connection::~connection() { close(); }

void connection::close() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  prepared_.clear();
  queue_.clear();
  pipeline_ = false;
  aborted_ = false;
}

bool connection::ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

namespace {
// libpq's messages run over several lines (a detail, a hint, "\n\t" between the reasons of
// a failed connection): made one line, for the log's one line per event and /healthz.
void trim(std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (char c : s) {
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  s = std::move(out);
}

// What the server says outside a query's result goes to the node's log as one line each,
// instead of libpq's default of printing it raw on stderr: a WARNING (one comes when another
// backend crashes and the server restarts), an ERROR or FATAL the connection gets while idle
// (57P01 as the server shuts down), and libpq's own notices at warn; the routine ones
// (NOTICE, INFO, LOG, DEBUG: a table that exists already) at debug.
void log_notice(void*, const PGresult* r) {
  const char* field = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  const std::string_view severity = field != nullptr ? field : "";
  std::string text = PQresultErrorMessage(r);
  trim(text);
  const bool routine = severity == "NOTICE" || severity == "INFO" || severity == "LOG" ||
                       severity.starts_with("DEBUG");
  log_line(routine ? log_level::debug : log_level::warn) << "store: PostgreSQL says: " << text;
}
}  // namespace

bool connection::open(const std::string& conninfo, std::string& error) {
  close();
  // Defaults for a database host that goes silent (a partition, a host gone without a reset):
  // give up connecting after 10 s, and on an established connection let TCP find the loss
  // within about 10 s (keepalives while idle, tcp_user_timeout while data waits for its
  // acknowledgement), instead of the kernel's many minutes. Listed before `dbname`, which
  // libpq expands from `conninfo` (a URI or key=value pairs): whatever it sets overrides them.
  static const char* const keywords[] = {
      "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
      "keepalives_count", "tcp_user_timeout", "dbname",          nullptr};
  const char* const values[] = {"10", "1", "5", "2", "3", "10000", conninfo.c_str(), nullptr};
  conn_ = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (PQstatus(conn_) != CONNECTION_OK) {
    error = PQerrorMessage(conn_);
    trim(error);
    close();
    return false;
  }
  PQsetNoticeReceiver(conn_, log_notice, nullptr);
  return true;
}

std::string connection::option(const char* keyword) const {
  if (conn_ == nullptr) return {};
  PQconninfoOption* options = PQconninfo(conn_);
  std::string out;
  for (auto* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (std::string_view(o->keyword) == keyword && o->val != nullptr) out = o->val;
  }
  PQconninfoFree(options);
  return out;
}

errc connection::lost() {
  if (message_.empty() && conn_ != nullptr) message_ = PQerrorMessage(conn_);
  if (message_.empty()) message_ = "not connected";
  trim(message_);
  close();
  return errc::unavailable;
}

errc connection::failed() const {
  return sqlstate_ == lock_not_available || sqlstate_ == query_canceled ? errc::busy
                                                                        : errc::io_error;
}

result<rows> connection::check(PGresult* r) {
  sqlstate_.clear();
  message_.clear();
  const auto status = r == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(r);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return rows(r);
  if (r != nullptr) {
    if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) sqlstate_ = s;
    message_ = PQresultErrorMessage(r);
    PQclear(r);
  }
  if (message_.empty() && conn_ != nullptr) message_ = PQerrorMessage(conn_);
  trim(message_);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) return lost();
  return failed();
}

result<const std::string*> connection::prepare(const std::string& sql) {
  if (auto it = prepared_.find(sql); it != prepared_.end()) return &it->second;
  std::string name = "s" + std::to_string(next_name_++);
  if (pipeline_) {
    if (PQsendPrepare(conn_, name.c_str(), sql.c_str(), 0, nullptr) == 0) return lost();
    queue_.push_back({item::prepare, sql, nullptr});
  } else {
    if (PQsendPrepare(conn_, name.c_str(), sql.c_str(), 0, nullptr) == 0) return lost();
    PGresult* r = nullptr;
    if (!statement_result(r)) return lost();
    auto checked = check(r);
    if (!checked) return checked.error();
  }
  return &prepared_.emplace(sql, std::move(name)).first->second;
}

bool connection::send_prepared(const std::string& name, const params& p) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  values.reserve(p.values_.size());
  lengths.reserve(p.values_.size());
  formats.reserve(p.values_.size());
  for (const auto& v : p.values_) {
    values.push_back(v.is_null ? nullptr : v.data.data());
    lengths.push_back(static_cast<int>(v.data.size()));
    formats.push_back(v.binary ? 1 : 0);
  }
  return PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(values.size()),
                             values.data(), lengths.data(), formats.data(), 0) != 0;
}

bool connection::next_result(PGresult*& out) {
  out = nullptr;
  if (answer_timeout_.count() > 0) {
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + answer_timeout_;
    while (PQisBusy(conn_) != 0) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) {
        message_ =
            "no answer from the database within " + std::to_string(answer_timeout_.count()) + " ms";
        return false;
      }
      pollfd p{PQsocket(conn_), POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(left));
      if (n == 0 || (n < 0 && errno == EINTR)) continue;  // the deadline decides
      if (n < 0 || PQconsumeInput(conn_) == 0) {
        message_.clear();  // lost() takes libpq's reason
        return false;
      }
      deadline = clock::now() + answer_timeout_;  // the server is alive: a fresh wait
    }
  }
  out = PQgetResult(conn_);
  return out != nullptr || PQstatus(conn_) == CONNECTION_OK;
}

bool connection::statement_result(PGresult*& out) {
  if (!next_result(out)) return false;
  if (out == nullptr) return true;
  for (;;) {
    PGresult* more = nullptr;
    if (!next_result(more)) {
      PQclear(out);
      out = nullptr;
      return false;
    }
    if (more == nullptr) return true;
    PQclear(more);
  }
}

void connection::record_error(PGresult* r) {
  if (aborted_) return;  // the first failure of the segment is the one that explains it
  aborted_ = true;
  sqlstate_.clear();
  message_.clear();
  if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) sqlstate_ = s;
  message_ = PQresultErrorMessage(r);
  trim(message_);
}

bool connection::read_next(item& kind, PGresult*& out) {
  out = nullptr;
  const queued q = std::move(queue_.front());
  queue_.pop_front();
  kind = q.kind;
  // A statement's results end with a null; a sync's does not.
  PGresult* r = nullptr;
  if (!(kind == item::sync ? next_result(r) : statement_result(r)) || r == nullptr) return false;
  const auto status = PQresultStatus(r);
  switch (status) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
      break;
    case PGRES_PIPELINE_SYNC:
      aborted_ = false;
      break;
    case PGRES_PIPELINE_ABORTED:
      aborted_ = true;
      if (kind == item::prepare) prepared_.erase(q.sql);
      break;
    default:  // PGRES_FATAL_ERROR and what a pipeline should never see
      if (PQstatus(conn_) != CONNECTION_OK) {
        record_error(r);
        PQclear(r);
        return false;
      }
      record_error(r);
      if (kind == item::prepare) prepared_.erase(q.sql);
      // A Parse counts as deferred too: it may be a deferred statement's, and even an
      // exec's own one was not waited for.
      if (kind != item::own) deferred_failed_ = true;
      break;
  }
  if (kind == item::own) {
    out = r;
  } else if (q.into && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) {
    *q.into = rows(r);
  } else {
    PQclear(r);
  }
  return true;
}

result<void> connection::enter_pipeline() {
  if (!ok()) return lost();
  if (PQenterPipelineMode(conn_) == 0) return lost();
  pipeline_ = true;
  return {};
}

result<rows> connection::exec(const std::string& sql, const params& p) {
  if (!ok()) return lost();
  auto name = prepare(sql);
  if (!name) return name.error();
  if (!pipeline_) {
    if (!send_prepared(**name, p)) return lost();
    // One statement, one result (then the null that ends them), as PQexecPrepared reads it.
    PGresult* r = nullptr;
    if (!statement_result(r)) return lost();
    return check(r);
  }
  // Pipeline: behind whatever was deferred, then one flush and one wait for all of it.
  if (!send_prepared(**name, p)) return lost();
  queue_.push_back({item::own, {}, nullptr});
  if (PQsendFlushRequest(conn_) == 0 || PQflush(conn_) != 0) return lost();
  if (!aborted_) {
    sqlstate_.clear();
    message_.clear();
  }
  while (!queue_.empty()) {
    item kind{};
    PGresult* r = nullptr;
    if (!read_next(kind, r)) return lost();
    if (kind != item::own) continue;
    const auto status = PQresultStatus(r);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return rows(r);
    PQclear(r);
    return failed();  // its own failure, or skipped after an earlier one (whose sqlstate())
  }
  return lost();  // unreachable: its own result is queued last
}

result<void> connection::defer(const std::string& sql, const params& p) {
  return collect(sql, p, nullptr);
}

result<void> connection::collect(const std::string& sql, const params& p,
                                 std::shared_ptr<rows> into) {
  if (!pipeline_ || !deferring_) {
    auto r = exec(sql, p);
    if (!r) return r.error();
    if (into) *into = std::move(*r);
    return {};
  }
  if (!ok()) return lost();
  auto name = prepare(sql);
  if (!name) return name.error();
  if (!send_prepared(**name, p)) return lost();
  queue_.push_back({item::deferred, {}, std::move(into)});
  return {};
}

result<void> connection::sync() {
  if (!pipeline_) return {};
  if (!ok()) return lost();
  bool failed = aborted_;
  if (PQpipelineSync(conn_) == 0) return lost();
  queue_.push_back({item::sync, {}, nullptr});
  while (!queue_.empty()) {
    item kind{};
    PGresult* r = nullptr;
    if (!read_next(kind, r)) return lost();
    if (kind == item::own) {
      const auto status = PQresultStatus(r);
      PQclear(r);
      if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) failed = true;
    } else if (aborted_) {
      failed = true;
    }
  }
  if (failed) return errc::io_error;
  return {};
}

result<void> connection::run(const std::string& sql) {
  if (!ok()) return lost();
  if (pipeline_) {
    // What was queued before is over: its failure was reported, or does not matter to
    // what this runs (a ROLLBACK).
    if (!queue_.empty() || aborted_) {
      auto before = sync();
      if (!before && before.error() == errc::unavailable) return before.error();
    }
    auto name = prepare(sql);
    if (!name) return name.error();
    if (!send_prepared(**name, {})) return lost();
    queue_.push_back({item::own, {}, nullptr});
    sqlstate_.clear();
    message_.clear();
    return sync();
  }
  // As PQexec: the statements run in order until one fails; its result (or the last one's)
  // is the outcome.
  if (PQsendQuery(conn_, sql.c_str()) == 0) return lost();
  PGresult* outcome = nullptr;
  for (;;) {
    PGresult* r = nullptr;
    if (!next_result(r)) {
      if (outcome != nullptr) PQclear(outcome);
      return lost();
    }
    if (r == nullptr) break;
    const auto status = PQresultStatus(outcome);
    if (outcome != nullptr && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      PQclear(r);  // the failure stays the outcome
      continue;
    }
    if (outcome != nullptr) PQclear(outcome);
    outcome = r;
  }
  auto r = check(outcome);
  if (!r) return r.error();
  return {};
}

}  // namespace parley::store::pg
