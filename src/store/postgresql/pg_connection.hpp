// A libpq connection, as the PostgreSQL store uses it: prepared statements by their SQL text,
// parameters in text (integers) or binary (bytes) form, results in text form, and errors as
// values that say whether the connection is gone (errc::unavailable) or one statement failed
// (errc::io_error, with its SQLSTATE). One connection belongs to one thread.
//
// The store's writer runs its connection in libpq's pipeline mode: a statement whose rows
// nobody reads (a cursor upsert, a savepoint, COMMIT) is `defer`red: sent, not waited for.
// The next `exec` sends its own statement behind them and waits once for all of them, so a
// request's writes and the savepoint around it cost no round trip of their own. A deferred
// statement's failure shows at that next `exec` (or `sync`) and says so (`deferred_failed`).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <deque>
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
  // The value of a libpq connection option in effect (PQconninfo), "" if none or not open.
  std::string option(const char* keyword) const;
  void close();

  // Runs one statement, prepared on first use on this connection. errc::unavailable if the
  // connection is gone (it is closed then), errc::busy if it gave up waiting for a lock
  // (lock_timeout) or ran past statement_timeout (nothing of it applied: retry shortly),
  // errc::io_error if it failed otherwise (sqlstate() says why; in a transaction, either
  // failure aborts the transaction until a rollback).
  result<rows> exec(const std::string& sql, const params& p = {});
  // Runs one or more statements without parameters (BEGIN, SAVEPOINT, COMMIT, DDL). In
  // pipeline mode: one statement, and everything queued before it is read first (a
  // failure there is forgotten: run is how a transaction is rolled back).
  result<void> run(const std::string& sql);

  // Pipeline mode, for the rest of this connection's life (until close). Statements with
  // several commands (`run("A; B")`) are not allowed in it.
  result<void> enter_pipeline();
  bool pipelined() const { return pipeline_; }
  // Sends a statement without waiting for its result (pipeline mode; otherwise, or with
  // deferring off, it is an exec). Its failure is reported by the next exec or sync, which
  // then say deferred_failed().
  result<void> defer(const std::string& sql, const params& p = {});
  // As defer, but its rows are kept: `into` holds them once the statement's result has been
  // read (by a later exec, run or sync), and stays empty if it failed. Not deferring (or
  // outside pipeline mode): an exec, whose rows `into` holds on return. A null `into`: defer.
  result<void> collect(const std::string& sql, const params& p, std::shared_ptr<rows> into);
  // Ends the pipeline's current segment (a Sync: outside a transaction block it commits what
  // ran since the last one) and reads every result queued before it. The first failure
  // among them, if any.
  result<void> sync();
  // An error since the last sync: the server skips what follows until the next sync.
  bool pipeline_aborted() const { return aborted_; }
  // A statement not waited for failed since reset_failures(): a deferred one, or the Parse
  // of any statement this connection had not prepared yet.
  bool deferred_failed() const { return deferred_failed_; }
  // Also forgets the last error (sqlstate(), error_message()), so that a failure read later
  // is this transaction's own.
  void reset_failures() {
    deferred_failed_ = false;
    sqlstate_.clear();
    message_.clear();
  }
  // Off: defer() waits for each statement like exec (a group applied again request by
  // request, to tell which one fails).
  void set_deferring(bool on) { deferring_ = on; }
  // How long a wait for the server's answer may pass without a byte from it before the
  // connection is taken as lost (errc::unavailable, and closed): a database process that is
  // frozen (stopped, swapping, hung on its disk) while its host's TCP still acknowledges
  // everything is found by nothing else, neither TCP's timeouts nor its own
  // statement_timeout. Zero (the default): wait as long as it takes. Kept across open().
  void set_answer_timeout(std::chrono::milliseconds timeout) { answer_timeout_ = timeout; }

  const std::string& sqlstate() const { return sqlstate_; }
  const std::string& error_message() const { return message_; }
  bool sqlstate_is(std::string_view s) const { return sqlstate_ == s; }
  // The last failure asks for the whole transaction to be tried again.
  bool must_retry() const {
    return sqlstate_ == serialization_failure || sqlstate_ == deadlock_detected;
  }

 private:
  result<rows> check(PGresult* r);
  // The prepared statement's name for `sql`, preparing it first if this connection has not
  // (in pipeline mode: queuing the Parse, whose result is read with the rest).
  result<const std::string*> prepare(const std::string& sql);
  bool send_prepared(const std::string& name, const params& p);
  // Pipeline mode: what a queued result belongs to.
  enum class item { prepare, deferred, own, sync };
  // Reads the next queued result and records its failure (the first since the last sync
  // keeps sqlstate() and error_message()). `own`'s PGresult is handed over in `out`; the
  // others are cleared. False if the connection is gone.
  bool read_next(item& kind, PGresult*& out);
  // PQgetResult within the answer timeout: false (with the reason in error_message()) if the
  // connection failed or the server stayed silent for it; `out` may be null (the end of a
  // statement's results) when true.
  bool next_result(PGresult*& out);
  // A statement's result (next_result), the rest of its results, up to the null that ends
  // them, read and cleared. False (and `out` null) as next_result's.
  bool statement_result(PGresult*& out);
  void record_error(PGresult* r);
  // The connection is gone: closed, errc::unavailable.
  errc lost();
  // A statement failed: errc::busy for the timeouts (sqlstate()), else errc::io_error.
  errc failed() const;

  PGconn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // SQL -> statement name
  std::size_t next_name_ = 0;
  std::string sqlstate_;
  std::string message_;

  std::chrono::milliseconds answer_timeout_{0};
  bool pipeline_ = false;
  bool deferring_ = true;
  bool aborted_ = false;
  bool deferred_failed_ = false;
  struct queued {
    item kind;
    std::string sql;             // prepare: the statement's SQL
    std::shared_ptr<rows> into;  // deferred by collect: where its rows go
  };
  std::deque<queued> queue_;  // results still to read, in the order sent
};

}  // namespace parley::store::pg
