"""Generation on a switched-in expert: chat-template encoding, settings, JSON-constrained decoding,
streaming (a pool mixin)."""
from __future__ import annotations

import threading
import time
from typing import Any

from workbench.errors import ExpertError
from workbench.experts.records import Generation, GenerationStream, LoadedExpert


def _enforcer_tokenizer_data(tokenizer):
    """lm-format-enforcer's table of a Hugging Face tokenizer: each token's text and whether it starts a word."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for token in range(vocab_size):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]  # a leading space survives after "0"
        regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    eos = tokenizer.eos_token_id
    return TokenEnforcerTokenizerData(regular, decode, eos, False, vocab_size)


def _finite_logits_check(name: str):
    """A logits processor that stops generation when the model's logits are not finite.

    Greedy decoding of NaN logits silently picks token 0 (often the end token: an empty answer);
    this turns that into an :class:`ExpertError` the CoE reports in the trace (and falls back on).
    The check costs one ``isfinite`` over the vocabulary per token.
    """
    import torch
    from transformers import LogitsProcessor

    class FiniteLogits(LogitsProcessor):
        def __init__(self) -> None:
            self.step = 0

        def __call__(self, input_ids, scores):
            self.step += 1
            # masks write -inf on purpose; NaN anywhere, or no finite logit in a row, is broken
            if bool(torch.isnan(scores).any()) or not bool(torch.isfinite(scores).any(dim=-1).all()):
                raise ExpertError(
                    f"expert {name!r} produced non-finite logits (NaN/inf) at new token {self.step}; "
                    "its weights are probably corrupt (a bad checkpoint, an fp16 overflow): "
                    "reload or re-download it, or try dtype float32")
            return scores

    return FiniteLogits()


class Generating:
    """The pool's generation methods (mixed into :class:`~workbench.experts.ExpertPool`)."""

    def _encode(self, loaded: LoadedExpert, prompt: str | list[dict]):
        import torch

        from workbench.chat_format import prompt_token_ids

        tokenizer = loaded.tokenizer
        if tokenizer is None:
            raise ExpertError(
                f"expert {loaded.name!r}: no tokenizer found in {loaded.spec.model}; save one there with "
                "tokenizer.save_pretrained(folder)"
            )
        ids = prompt_token_ids(tokenizer, prompt, chat_template=loaded.spec.chat_template,
                               who=f"expert {loaded.name!r}: ")
        input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def _json_constraint(self, loaded: LoadedExpert, schema: dict):
        """A ``prefix_allowed_tokens_fn`` that lets the model write only JSON valid for ``schema``.

        lm-format-enforcer's :class:`TokenEnforcer` does the work; its own transformers glue does
        not import under transformers 5, so the few lines of glue live in
        :func:`_enforcer_tokenizer_data`. The tokenizer's vocabulary table (a pass over the
        vocabulary, a second or two) is computed once per tokenizer and kept.
        """
        try:
            from lmformatenforcer import (
                CharacterLevelParserConfig,
                JsonSchemaParser,
                TokenEnforcer,
            )
        except ImportError:
            from workbench.errors import MissingDependencyError

            raise MissingDependencyError(
                "JSON-constrained generation needs the package 'lm-format-enforcer' (a dependency of "
                "coe-workbench); reinstall the workbench or run: pip install lm-format-enforcer") from None
        if not isinstance(schema, dict):
            raise ExpertError(f"json_schema must be a JSON schema dict, got {type(schema).__name__}")
        tokenizer = loaded.tokenizer
        with self._lock:
            data = self._enforcer_data.get(id(tokenizer))
        if data is None or data[0] is not tokenizer:
            data = (tokenizer, _enforcer_tokenizer_data(tokenizer))
            with self._lock:
                self._enforcer_data[id(tokenizer)] = data
        try:
            # keys in the schema's order ("required"), so a schema can fix what comes first; at most two
            # whitespace characters in a row (small models otherwise pad until max_new_tokens)
            parser = JsonSchemaParser(schema)
            enforcer = TokenEnforcer(data[1], parser)  # sets the parser's config to the tokenizer's alphabet
            parser.config = CharacterLevelParserConfig(alphabet=data[1].tokenizer_alphabet,
                                                       force_json_field_order=True, max_consecutive_whitespaces=2)
        except Exception as exc:  # noqa: BLE001 - pydantic raises several types
            raise ExpertError(f"json_schema is not a usable JSON schema: {exc}") from None

        def allowed(batch_id: int, sent) -> list[int]:
            return enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens

        return allowed

    def _gen_kwargs(self, loaded: LoadedExpert, max_new_tokens: int | None, gen: dict) -> dict:
        kwargs = {"max_new_tokens": 64, "do_sample": False}
        kwargs.update(loaded.spec.generation)
        kwargs.update(gen)
        schema = kwargs.pop("json_schema", None)
        if schema is not None:  # decoding constrained to the schema: the reply always parses
            kwargs["prefix_allowed_tokens_fn"] = self._json_constraint(loaded, schema)
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = int(max_new_tokens)
        processors = list(kwargs.pop("logits_processor", None) or [])
        kwargs["logits_processor"] = [*processors, _finite_logits_check(loaded.name)]
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        tokenizer = loaded.tokenizer
        if "pad_token_id" not in kwargs and tokenizer is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            if pad is not None:
                kwargs["pad_token_id"] = pad
        return kwargs

    def _run_generate(self, loaded: LoadedExpert, prompt, max_new_tokens, streamer, gen) -> Generation:
        import torch

        inputs = self._encode(loaded, prompt)
        kwargs = self._gen_kwargs(loaded, max_new_tokens, gen)
        seed = kwargs.pop("seed", None)
        t0 = time.perf_counter()
        try:
            if seed is not None:  # sampling reproducible for a request that runs alone
                torch.manual_seed(int(seed))
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, streamer=streamer, **kwargs)
        except Exception as exc:
            raise ExpertError(f"expert {loaded.name!r}: generate failed: {exc}") from exc
        seconds = time.perf_counter() - t0
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        text = loaded.tokenizer.decode(new, skip_special_tokens=True)
        limit = kwargs.get("max_new_tokens")
        stop_reason = "length" if limit is not None and len(new) >= int(limit) else "stop"
        return Generation(text, len(new), seconds, len(new) / seconds if seconds > 0 else 0.0,
                          loaded.tier_found, loaded.switch_s, loaded.name, new, loaded.adapter_s,
                          stop_reason)

    def generate(self, name: str, prompt: str | list[dict], *, max_new_tokens: int | None = None, streamer: Any = None, **gen: Any) -> Generation:
        """Switch ``name`` in and generate (greedy unless the spec or ``gen`` say otherwise).

        Parameters
        ----------
        name : str
            Expert name.
        prompt : str or list of dict
            Text, or chat messages; the chat template is applied when the spec asks for it (or,
            with ``chat_template=None``, when the tokenizer has one).
        max_new_tokens : int, optional
            Overrides the spec's default (64 when unset).
        streamer : transformers streamer, optional
        **gen
            Other ``generate`` arguments; ``json_schema=<dict>`` constrains decoding so the reply
            is JSON valid for that schema (lm-format-enforcer).

        Returns
        -------
        Generation
        """
        with self.use(name) as loaded:
            return self._run_generate(loaded, prompt, max_new_tokens, streamer, gen)

    def stream(self, name: str, prompt: str | list[dict], **gen: Any) -> GenerationStream:
        """Yield text chunks as they are generated (``TextIteratorStreamer`` in a thread).

        The returned :class:`GenerationStream` is an iterator of strings; after it is exhausted its
        ``.generation`` holds the final :class:`Generation`.
        """
        from transformers import TextIteratorStreamer

        stream = GenerationStream()
        loaded = self._switch_in(name)  # hold it now; errors surface here, in the caller's thread
        entry = self._entries[name]
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True) if loaded.tokenizer else None
        max_new_tokens = gen.pop("max_new_tokens", None)

        def work() -> None:
            try:
                stream.generation = self._run_generate(loaded, prompt, max_new_tokens, streamer, gen)
            except BaseException as exc:
                stream.error = exc
                if streamer is not None:
                    streamer.end()
            finally:
                self._release(entry)

        def pump() -> None:
            thread = threading.Thread(target=work, name=f"generate-{name}", daemon=True)
            thread.start()
            try:
                if streamer is not None:
                    for chunk in streamer:
                        if chunk:
                            stream._queue.put(("text", chunk))
            finally:
                thread.join()
                if stream.error is not None:
                    stream._queue.put(("error", stream.error))
                stream._queue.put(("end", None))

        threading.Thread(target=pump, name=f"stream-{name}", daemon=True).start()
        return stream
