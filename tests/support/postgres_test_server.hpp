// The PostgreSQL server of a test run: started once per ctest run by the fixture
// postgres_start (tests/support/postgres_server), found through PARLEY_TEST_POSTGRES_DIR,
// whose `conninfo` file names it. Each test gets a schema of its own, so that tests share
// one server without seeing each other.
#pragma once

#include <libpq-fe.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

namespace parley::test_support {

// "host=127.0.0.1 port=N user=postgres" of the run's server. Throws if there is none: run the
// test through ctest (which starts it) or set PARLEY_TEST_POSTGRES_DIR.
inline std::string postgres_conninfo() {
  const char* dir = std::getenv("PARLEY_TEST_POSTGRES_DIR");
  if (dir == nullptr)
    throw std::runtime_error(
        "PARLEY_TEST_POSTGRES_DIR is not set: run this test through ctest, whose fixture "
        "postgres_start starts PostgreSQL, or start one with tests/support/postgres_server");
  std::ifstream in(std::string(dir) + "/conninfo");
  std::string conninfo;
  if (!std::getline(in, conninfo) || conninfo.empty())
    throw std::runtime_error(std::string("no PostgreSQL conninfo in ") + dir + "/conninfo");
  return conninfo;
}

// Runs one statement on the server's `postgres` database; throws on failure.
inline void postgres_admin(const std::string& sql) {
  const std::string conninfo = postgres_conninfo() + " dbname=postgres";
  PGconn* c = PQconnectdb(conninfo.c_str());
  std::string error;
  if (PQstatus(c) != CONNECTION_OK) {
    error = PQerrorMessage(c);
  } else {
    PGresult* r = PQexec(c, sql.c_str());
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
      error = PQresultErrorMessage(r);
    PQclear(r);
  }
  PQfinish(c);
  if (!error.empty()) throw std::runtime_error("PostgreSQL: " + sql + ": " + error);
}

// A conninfo whose sessions work in schema `name` (created if missing) of the `postgres`
// database. `name` is reduced to [a-z0-9_] and cut to PostgreSQL's 63-byte identifiers (so
// what tells two names apart must come first).
inline std::string postgres_database(const std::string& name) {
  std::string schema = "t_";
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    schema.push_back(std::isalnum(u) ? static_cast<char>(std::tolower(u)) : '_');
  }
  if (schema.size() > 63) schema.resize(63);
  postgres_admin("CREATE SCHEMA IF NOT EXISTS " + schema);
  return postgres_conninfo() + " dbname=postgres options=-csearch_path=" + schema;
}

// One `key=value` of a conninfo as these helpers write it (values without spaces); empty if
// it has none.
inline std::string conninfo_field(const std::string& conninfo, const std::string& key) {
  const auto at = conninfo.find(key + "=");
  if (at == std::string::npos) return {};
  const auto start = at + key.size() + 1;
  return conninfo.substr(start, conninfo.find(' ', start) - start);
}

// The same as a postgresql:// URI (what parleyd's --store takes).
inline std::string postgres_url(const std::string& name) {
  const std::string conninfo = postgres_database(name);
  auto field = [&](const std::string& key) { return conninfo_field(conninfo, key); };
  return "postgresql://" + field("user") + "@" + field("host") + ":" + field("port") +
         "/postgres?options=-csearch_path%3D" + field("options").substr(std::string("-csearch_path=").size());
}

}  // namespace parley::test_support
