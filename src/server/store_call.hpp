// Awaiting a Store call from a coroutine: the store completes on its own thread; the result
// is posted back to the awaiting coroutine's executor.
//
//   auto r = co_await store_call<store::device>(
//       [&](store::completion<store::device> done) { st.find_device(id, std::move(done)); });
//
// `start` runs synchronously inside the co_await, so references to the caller's locals stay
// valid while it runs; calls made from one coroutine reach the store in program order.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

#include "store/store.hpp"

namespace parley::server {

template <class T, class Start>
boost::asio::awaitable<store::result<T>> store_call(Start start) {
  namespace asio = boost::asio;
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>, void(store::result<T>)>(
      [](auto handler, Start start) {
        using handler_type = decltype(handler);
        // Keeps the io_context running until the result is posted back.
        auto work = asio::prefer(asio::get_associated_executor(handler),
                                 asio::execution::outstanding_work.tracked);
        auto shared = std::make_shared<handler_type>(std::move(handler));
        start([shared, work](store::result<T> r) mutable {
          asio::post(work, [shared, r = std::move(r)]() mutable { (*shared)(std::move(r)); });
        });
      },
      asio::use_awaitable, std::move(start));
}

}  // namespace parley::server
