// Running one coroutine of the generator to completion on its io_context, from plain code: the
// scenarios' set-up steps (connect, register, request a slot) between timed phases.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <exception>
#include <optional>
#include <utility>

namespace parley::bench {

// Runs `a` on `io` to completion (other coroutines on `io`, such as a client's read loop, keep
// running meanwhile); rethrows what `a` threw.
template <class T>
T run_on(boost::asio::io_context& io, boost::asio::awaitable<T> a) {
  std::optional<T> out;
  std::exception_ptr error;
  boost::asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, T v) {
    error = e;
    out = std::move(v);
    io.stop();
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

inline void run_on(boost::asio::io_context& io, boost::asio::awaitable<void> a) {
  std::exception_ptr error;
  boost::asio::co_spawn(io, std::move(a), [&](std::exception_ptr e) {
    error = e;
    io.stop();
  });
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
}

}  // namespace parley::bench
