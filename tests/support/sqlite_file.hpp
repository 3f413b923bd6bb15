// Reading and writing a client's SQLite file (local.db) behind local_store's back, for tests
// of its migrations.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace parley::test_support {

// Runs `sql` on the SQLite database `db`; false (with the reason as a test failure) if it
// fails.
inline bool run_sql(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* handle = nullptr;
  bool ok = sqlite3_open(db.c_str(), &handle) == SQLITE_OK;
  char* error = nullptr;
  if (ok && sqlite3_exec(handle, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    ADD_FAILURE() << sql << ": " << (error ? error : "?");
    ok = false;
  }
  sqlite3_free(error);
  sqlite3_close(handle);
  return ok;
}

// The first column of the first row of `sql` on the SQLite database `db` as an integer;
// nullopt if there is no row (or the query fails).
inline std::optional<std::int64_t> query_int(const std::filesystem::path& db,
                                             const std::string& sql) {
  sqlite3* handle = nullptr;
  std::optional<std::int64_t> out;
  if (sqlite3_open(db.c_str(), &handle) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(handle, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      out = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(handle);
  return out;
}

}  // namespace parley::test_support
