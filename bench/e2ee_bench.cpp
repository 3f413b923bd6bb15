// What end-to-end encryption costs a client, per message and per session set-up, with the
// real engine and the real SQLite store (on tmpfs when /dev/shm exists, so that the figures are
// the CPU's, not the disk's fsync), against the symmetric core alone (AES-256-CBC + HMAC-SHA256
// of the same padded message through OpenSSL) measured in the same run.
//
//   build/bin/parley-e2ee-bench [--benchmark_min_time=1]
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <filesystem>
#include <memory>
#include <random>

#include "client/local_store.hpp"
#include "client/padding.hpp"
#include "e2ee/signal_engine.hpp"

namespace {

namespace fs = std::filesystem;
using namespace parley;

fs::path scratch_dir() {
  std::random_device rd;
  const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  return base / ("parley_e2ee_bench_" + std::to_string(rd()));
}

struct device {
  std::string name;
  std::int32_t id;
  std::unique_ptr<client::local_store> store;
  std::unique_ptr<e2ee::signal_engine> engine;
  e2ee::key_upload published;

  device(e2ee::library_context& lib, const fs::path& dir, std::string n, std::int32_t i,
         std::size_t prekeys)
      : name(std::move(n)), id(i) {
    store = std::make_unique<client::local_store>(dir / name / "local.db");
    engine = std::make_unique<e2ee::signal_engine>(lib, *store);
    engine->create_identity(1).value();
    published = engine->full_upload(prekeys).value();
  }
  e2ee::peer_bundle bundle(std::size_t prekey) const {
    return {name,
            id,
            published.registration_id,
            published.identity_key,
            *published.signed_prekey,
            published.one_time_prekeys.at(prekey)};
  }
};

const std::string message(100, 'm');  // the 100-byte message of parley-bench

// One message: encrypt at alice (in a transaction, as the messenger does), decrypt at bob.
void BM_encrypt_and_decrypt(benchmark::State& state) {
  e2ee::library_context lib;
  const auto dir = scratch_dir();
  device alice(lib, dir, "alice", 1, 1), bob(lib, dir, "bob", 2, 1);
  alice.engine->process_bundle(bob.bundle(0)).value();
  const auto padded = client::pad(message);
  // Confirm the session both ways so that steady-state messages are SignalMessages.
  auto first = alice.engine->encrypt("bob", 2, padded).value();
  bob.engine->decrypt("alice", 1, first.type, first.bytes).value();
  auto back = bob.engine->encrypt("alice", 1, padded).value();
  alice.engine->decrypt("bob", 2, back.type, back.bytes).value();
  std::size_t bytes = 0;
  for (auto _ : state) {
    e2ee::ciphertext c;
    {
      client::local_store::transaction tx(*alice.store);
      c = alice.engine->encrypt("bob", 2, padded).value();
      tx.commit();
    }
    client::local_store::transaction tx(*bob.store);
    auto plain = bob.engine->decrypt("alice", 1, c.type, c.bytes).value();
    tx.commit();
    bytes = c.bytes.size();
    benchmark::DoNotOptimize(plain);
  }
  state.counters["ciphertext_bytes"] = static_cast<double>(bytes);
  state.SetItemsProcessed(state.iterations());
  fs::remove_all(dir);
}
BENCHMARK(BM_encrypt_and_decrypt)->Unit(benchmark::kMicrosecond);

// X3DH: alice builds a session from a fresh bundle, bob opens the first PreKeySignalMessage.
void BM_session_setup(benchmark::State& state) {
  e2ee::library_context lib;
  const auto dir = scratch_dir();
  device bob(lib, dir, "bob", 2, 100);
  std::size_t i = 0;
  std::size_t n = 0;
  const auto padded = client::pad(message);
  for (auto _ : state) {
    state.PauseTiming();
    // A new sender each time: every set-up is a first contact.
    device alice(lib, dir, "alice" + std::to_string(n), static_cast<std::int32_t>(10 + n), 0);
    ++n;
    if (i == bob.published.one_time_prekeys.size()) {
      bob.published = bob.engine->full_upload(100).value();
      i = 0;
    }
    auto b = bob.bundle(i++);
    state.ResumeTiming();
    alice.engine->process_bundle(b).value();
    auto c = alice.engine->encrypt(bob.name, bob.id, padded).value();
    benchmark::DoNotOptimize(bob.engine->decrypt(alice.name, alice.id, c.type, c.bytes).value());
  }
  state.SetItemsProcessed(state.iterations());
  fs::remove_all(dir);
}
BENCHMARK(BM_session_setup)->Unit(benchmark::kMicrosecond)->Iterations(200);

// The baseline: the symmetric work of one message alone — AES-256-CBC encrypt and decrypt of
// the padded message plus an HMAC-SHA256 on each side, no ratchet, no store.
void BM_symmetric_core(benchmark::State& state) {
  unsigned char key[32], mac_key[32], iv[16];
  RAND_bytes(key, sizeof key);
  RAND_bytes(mac_key, sizeof mac_key);
  RAND_bytes(iv, sizeof iv);
  const auto padded = client::pad(message);
  std::vector<unsigned char> ct(padded.size() + 32), pt(padded.size() + 32);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  for (auto _ : state) {
    int n = 0, tail = 0;
    EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), nullptr, key, iv);
    EVP_EncryptUpdate(ctx, ct.data(), &n, reinterpret_cast<const unsigned char*>(padded.data()),
                      static_cast<int>(padded.size()));
    EVP_EncryptFinal_ex(ctx, ct.data() + n, &tail);
    const int ct_len = n + tail;
    HMAC(EVP_sha256(), mac_key, sizeof mac_key, ct.data(), static_cast<std::size_t>(ct_len), mac,
         &mac_len);
    HMAC(EVP_sha256(), mac_key, sizeof mac_key, ct.data(), static_cast<std::size_t>(ct_len), mac,
         &mac_len);
    EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), nullptr, key, iv);
    EVP_DecryptUpdate(ctx, pt.data(), &n, ct.data(), ct_len);
    EVP_DecryptFinal_ex(ctx, pt.data() + n, &tail);
    benchmark::DoNotOptimize(pt.data());
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_symmetric_core)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
