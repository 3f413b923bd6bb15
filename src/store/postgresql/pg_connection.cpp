#include "store/postgresql/pg_connection.hpp"

#include <charconv>


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
}

bool connection::ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

bool connection::open(const std::string& conninfo, std::string& error) {
  close();
  conn_ = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    error = PQerrorMessage(conn_);
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    close();
    return false;
  }
  return true;
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
  while (!message_.empty() && (message_.back() == '\n' || message_.back() == ' '))
    message_.pop_back();
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    close();
    return errc::unavailable;
  }
  return errc::io_error;
}

result<rows> connection::exec(const std::string& sql, const params& p) {
  if (!ok()) {
    close();
    sqlstate_.clear();
    message_ = "not connected";
    return errc::unavailable;
  }
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "s" + std::to_string(prepared_.size());
    auto r = check(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr));
    if (!r) return r.error();
    it = prepared_.emplace(sql, std::move(name)).first;
  }
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
  return check(PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(values.size()),
                              values.data(), lengths.data(), formats.data(), 0));
}

result<void> connection::run(const std::string& sql) {
  if (!ok()) {
    close();
    message_ = "not connected";
    return errc::unavailable;
  }
  auto r = check(PQexec(conn_, sql.c_str()));
  if (!r) return r.error();
  return {};
}

}  // namespace parley::store::pg
