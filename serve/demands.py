"""What a message demands: the sums of money asked for, and the payment or contact identifiers given.

Both are read off the prepared text (:func:`model.text.prepare_text`), where full-width digits and
disguises such as zfb or vx are already resolved, with Chinese numerals turned into digits by cn2an.

A number is taken for a sum asked for (给我转300, 第二笔三百今晚结清, 一条差评50, 少于200免谈, 要么400要么差评)
unless it counts things or tells the time (5条, 3件, 7天, 十点, 三倍), belongs to an identifier, an order
number or a hotline (12315), follows letters (iPhone 15), or reports money already spent, received or
quoted (花了399, 已经退了50, 原价99, 降价到199, 你说赔我20, 上次退了80). Identifiers are shown masked (all but the last 4 characters) and
kept in full only where a case file needs them.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass

from model.text import prepare_text


@dataclass(frozen=True)
class Identifier:
    kind: str  # alipay, wechat, qq, bank_card, phone
    value: str

    def masked(self) -> str:
        return "*" * max(0, len(self.value) - 4) + self.value[-4:]


_SEP = r"[:：是为\s]*"
_PHONE = r"1[3-9]\d{9}"
_SPACED_PHONE = r"1[3-9]\d[ -]\d{4}[ -]\d{4}"  # 139 1234 5678
_IDENTIFIERS = [  # (kind, pattern with the id as group 1), tried in this order; a span taken is not read again
    ("bank_card", re.compile(r"(?<!\d)(\d{4}(?:[ -]?\d{4}){3}(?:[ -]?\d{1,3})?)(?!\d)")),
    ("alipay", re.compile(rf"支付宝(?:账号|账户|号)?{_SEP}([\w.+-]+@[\w-]+(?:\.[\w-]+)+|{_PHONE})", re.IGNORECASE)),
    ("wechat", re.compile(rf"(?:微信|v信|威信|薇信|加v|vx|wx)(?:号|id)?{_SEP}({_PHONE}|[a-zA-Z][-\w]{{5,19}})", re.IGNORECASE | re.ASCII)),
    ("qq", re.compile(rf"(?:qq|扣扣)(?:号)?{_SEP}(\d{{5,11}})(?!\d)", re.IGNORECASE)),
    ("phone", re.compile(rf"(?<!\d)({_SPACED_PHONE}|{_PHONE})(?!\d)")),
]
_ORDER_NUMBER = re.compile(r"(?:订单号?|单号|快递单号|运单号)[:：是为\s]*[a-zA-Z]*\d+")
_NUMBER = re.compile(r"([¥$]\s*)?(\d+(?:\.\d+)?)\s*(?:(万|w|千|k)(\d)(?!\d)|(万|w|千|k|百))?\s*(元|块钱|块|rmb|刀|米|大洋)?", re.IGNORECASE)
_SCALE = {"万": 10_000, "w": 10_000, "千": 1_000, "k": 1_000, "百": 100}
# Chinese numerals to digits: runs of numeral characters, or one numeral before a money unit (张三, 一条 stay words).
_NUMERALS = re.compile(r"(?<![百千万])[一二两三四五六七八九十][零一二两三四五六七八九十百千万]+|[二两三四五六七八九十](?=块|元|毛)")
# After a number, these make it a count, a time, a size or a coupon, never a sum asked for.
_NOT_MONEY_AFTER = re.compile(
    r"\s*(?:件|条|个|次|遍|回|天|日|号|点|小时|时|分钟|分|秒|月|年|周|星|颗|倍|%|％|人|位|笔|单|斤|公斤|克|cm|mm|寸|码|岁|楼|层|台|张"
    r"|瓶|盒|包|袋|双|套|家|份|句|字|期|折|毫安|mah|ml|毫升|升|瓦|gb?\b|tb?\b|[-－]\d|的(?!红包))",
    re.IGNORECASE,
)
_COUPON_AFTER = re.compile(r"\s*的?(?:优惠)?券")  # a coupon is not cash, whatever its unit
_NOT_MONEY_BEFORE = re.compile(r"(?:码|编号|型号|满|减|双|\d[-－])[:：\s]*$")  # 取件码 3-2-1108, 满300减50, 双12
# Before a number, these report money spent, received or quoted rather than ask for it.
_REPORTED_BEFORE = re.compile(
    r"(?:花了|花|买的|买了|原价|售价|价格是|标价|单价|到手价|实付|付了|退了|退回|已退|收到|赔了我?|补了|给过|转过|付过|领了|省了|优惠|金额"
    r"|消费|不下|降价到|降到|卖|才|补的|给的|赔的|退的|你说|已经[^，。,.！!？?]*)\s*[¥$]?\s*$"
)
# A clause (since the last punctuation) that quotes someone else or tells of an earlier time reports its sums.
_QUOTED_CLAUSE = re.compile(r"(?:(?<![跟和对])你说|你们说|卖家说|客服说|商家说|他说|她说|对方说|上次|上回|以前|那次)[^，。,.！!？?；;]*$")
_HOTLINES = {"12315", "315", "12345", "110"}
_CAPITALS = str.maketrans("壹贰叁肆伍陆柒捌玖拾佰仟萬", "一二三四五六七八九十百千万")


def identifiers(text: str) -> list[Identifier]:
    """Payment and contact ids in the message, in order of appearance (values without spaces or dashes)."""
    return [identifier for _, identifier in _identifier_spans(prepare_text(text)) if identifier]


def _identifier_spans(prepared: str) -> list[tuple[tuple[int, int], Identifier | None]]:
    """Each id's span and value, in order; order numbers are taken first (value None), so their digits are no id."""
    taken: list[tuple[tuple[int, int], Identifier | None]] = [(m.span(), None) for m in _ORDER_NUMBER.finditer(prepared)]
    for kind, pattern in _IDENTIFIERS:
        for match in pattern.finditer(prepared):
            start, end = match.span(1)
            if any(a < end and start < b for (a, b), _ in taken):
                continue
            value = re.sub(r"[ -]", "", match.group(1)) if kind in ("bank_card", "phone") else match.group(1)
            taken.append(((start, end), Identifier(kind, value)))
    return sorted(taken, key=lambda pair: pair[0])


def demanded_amounts(text: str) -> list[float]:
    """Sums of money the message asks for, in order (see the module docstring for what counts)."""
    prepared = _numerals_to_digits(_blank_identifiers(prepare_text(text)))
    found = []
    for match in _NUMBER.finditer(prepared):
        _sign, number, compound, tail, scale, unit = match.groups()
        before, after = prepared[max(0, match.start() - 12) : match.start()], prepared[match.end() :]
        letter = before.rstrip()[-1:]
        if number in _HOTLINES or (letter.isascii() and letter.isalpha()):  # 12315; iPhone 15, XL2
            continue
        if (
            _QUOTED_CLAUSE.search(prepared[: match.start()])
            or _REPORTED_BEFORE.search(before)
            or _NOT_MONEY_BEFORE.search(before)
            or _COUPON_AFTER.match(after)
        ):
            continue
        if not unit and _NOT_MONEY_AFTER.match(after):
            continue
        if compound:  # 1万2 = 12,000
            found.append(float(number) * _SCALE[compound.lower()] + int(tail) * _SCALE[compound.lower()] / 10)
        else:
            found.append(float(number) * _SCALE.get((scale or "").lower(), 1))
    return found


def _numerals_to_digits(text: str) -> str:
    """两千块 -> 2000块, 一百五 -> 150; a run cn2an cannot read stays as it is."""
    import cn2an

    def convert(match: re.Match) -> str:
        with warnings.catch_warnings(), contextlib.suppress(ValueError, KeyError, IndexError):
            warnings.simplefilter("ignore")  # cn2an warns on every run it cannot read
            return str(cn2an.cn2an(match.group(0), "smart"))
        return match.group(0)

    return _NUMERALS.sub(convert, text.translate(_CAPITALS))


def without_identifiers(text: str) -> str:
    """The prepared text with its ids and order numbers blanked: the wording a script keeps from account to account."""
    return _blank_identifiers(prepare_text(text))


def _blank_identifiers(prepared: str) -> str:
    """The text with identifiers and order numbers replaced by spaces, so their digits are never read as sums."""
    chars = list(prepared)
    for (start, end), _ in _identifier_spans(prepared):
        chars[start:end] = " " * (end - start)
    return "".join(chars)
