// A libpq connection, as the PostgreSQL store uses it: prepared statements by their SQL text,
// parameters in text (integers) or binary (bytes) form, results in text form, and errors as
// values that say whether the connection is gone (errc::unavailable) or one statement failed
// (errc::io_error, with its SQLSTATE). One connection belongs to one thread.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/store_error.hpp"

namespace parley::store::pg {

// SQLSTATEs the store acts on.
inline constexpr std::string_view unique_violation = "23505";
inline constexpr std::string_view serialization_failure = "40001";
inline constexpr std::string_view deadlock_detected = "40P01";
inline constexpr std::string_view lock_not_available = "55P03";  // lock_timeout
inline constexpr std::string_view query_canceled = "57014";      // statement_timeout

// The parameters of one statement ($1, $2, ... in the order added).
class params {
 public:
  params& add(std::uint64_t v);
  params& add(std::int64_t v);
  params& add(bool v);
  params& text(std::string_view v);   // a TEXT value
  params& bytes(std::string_view v);  // a BYTEA value (sent in binary form)
  params& null();
  std::size_t size() const { return values_.size(); }

 private:
  friend class connection;
  struct value {
    std::string data;
    bool binary = false;
    bool is_null = false;
  };
  std::vector<value> values_;
};

// A statement's rows (text form).
class rows {
 public:
  explicit rows(PGresult* r = nullptr) : result_(r, &PQclear) {}
  int size() const { return result_ ? PQntuples(result_.get()) : 0; }
  bool empty() const { return size() == 0; }
  bool is_null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  std::string_view text(int row, int col) const;
  std::uint64_t u64(int row, int col) const;  // 0 for NULL
  bool boolean(int row, int col) const;
  std::string bytes(int row, int col) const;  // a BYTEA column
  std::vector<std::uint64_t> bigints(int row, int col) const;  // a BIGINT[] column; NULL: {}
  // Rows changed by an INSERT/UPDATE/DELETE without RETURNING.
  std::uint64_t affected() const;

 private:
  std::shared_ptr<PGresult> result_;
};

class connection {
 public:
  connection() = default;
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Connects (or reconnects). False with the reason in `error` if it cannot.
  bool open(const std::string& conninfo, std::string& error);
  bool ok() const;
  void close();

  // Runs one statement, prepared on first use on this connection. errc::unavailable if the
  // connection is gone (it is closed then), errc::io_error if the statement failed
  // (sqlstate() says why; in a transaction, the transaction is aborted until a rollback).
  result<rows> exec(const std::string& sql, const params& p = {});
  // Runs one or more statements without parameters (BEGIN, SAVEPOINT, COMMIT, DDL).
  result<void> run(const std::string& sql);

  const std::string& sqlstate() const { return sqlstate_; }
  const std::string& error_message() const { return message_; }
  bool sqlstate_is(std::string_view s) const { return sqlstate_ == s; }
  // The last failure asks for the whole transaction to be tried again.
  bool must_retry() const {
    return sqlstate_ == serialization_failure || sqlstate_ == deadlock_detected;
  }

 private:
  result<rows> check(PGresult* r);

  PGconn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // SQL -> statement name
  std::string sqlstate_;
  std::string message_;
};

}  // namespace parley::store::pg
