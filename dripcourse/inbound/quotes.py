"""Where quoted history starts in a reply, in the languages of the world's physicians.

Mail clients introduce the message they quote in two ways: one line ("On 3 May, Ana wrote:",
"Le 3 mai, Ana a écrit :", "2026年5月3日 Ana 写道：") or a header block (Outlook's "From: /
Sent: / To: / Subject:", localised, often under a line of underscores or "-----Original
Message-----"). This module finds either in 22 languages (English, Spanish, Portuguese,
French, German, Italian, Dutch, Polish, Swedish, Danish, Norwegian, Finnish, Russian,
Ukrainian, Czech, Turkish, Arabic, Hebrew, Chinese, Japanese, Korean, Hindi), and the
signature lines clients add ("Sent from my iPhone" and its translations). Each test is a
regular expression over one line of bounded length, so a whole reply costs linear time.
"""

from __future__ import annotations

import re

MAX_LINE = 400  # a header line longer than this is not one

# The verb of a one-line header, at the end of the line (before the colon), per language.
_WROTE = (
    r"wrote|writes|sent|escribió|escreveu|a écrit|schrieb|hat geschrieben|ha scritto|scrisse"
    r"|schreef|heeft geschreven|napisał\(a\)|napisał|napisała|napisal\(a\)|napsal\(a\)"
    r"|napsal|napsala|skrev|skrev følgende|kirjoitti|пишет|написал\(а\)|написал|написала"
    r"|пише|написав\(ла\)|написав|написала|şunu yazdı|yazdı|كتب|كتبت|כתב|כתבה|כתב/ה"
    r"|写道|寫道|のメッセージ|書きました|님이 작성|작성|ने लिखा"
)
_WROTE_LINE = re.compile(
    rf"^[\s>*-]*(.{{0,300}}?)({_WROTE})\s*[:：]?\s*(-{{2,}})?\s*$", re.IGNORECASE
)
# Short words that often begin a header line, so "On" alone in prose is not taken for one.
_WROTE_OPENERS = re.compile(
    r"^\s*[>*-]*\s*(on|el|em|le|am|il|op|w dniu|den|dne|в|у|on\s|في|ב|\d)", re.IGNORECASE
)
# A line with a date and an address that introduces a quote without any verb
# ("2011/4/7 Nathan <nathan@example.com>", "30.09.2017, 18.30, "John" <j@example.com>:").
_DATE_ADDRESS = re.compile(r"\d.{0,200}[\w.+-]@[\w-]+\.[\w.-]+.{0,80}$")

# Outlook's header block: the labels of its lines, per language.
_FROM = (
    r"from|de|von|da|van|od|från|fra|lähettäjä|от|від|kimden|من|מאת|发件人|發件人|寄件者"
    r"|差出人|보낸\s?사람|प्रेषक|message du"
)
_OTHER = (
    r"sent|to|subject|date|cc|reply-to|enviado|enviada|enviada em|enviado em|para|asunto"
    r"|assunto|fecha|data|envoyé|à|a|objet|copie à|sujet|gesendet|an|betreff|datum|inviato"
    r"|oggetto|verzonden|aan|onderwerp|wysłano|do|temat|dw|skickat|till|ämne|kopia|sendt"
    r"|til|emne|dato|kopi|lähetetty|vastaanottaja|aihe|päivämäärä|kopio|отправлено|кому"
    r"|тема|дата|копия|надіслано|відправлено|komu|předmět|odesláno|kopie|gönderildi"
    r"|gönderilme|kime|konu|tarih|bilgi|تاريخ الإرسال|أرسل|إلى|الموضوع|التاريخ|נשלח|אל"
    r"|נושא|תאריך|发送时间|收件人|主题|抄送|日期|傳送時間|收件者|主旨|副本|送信日時|宛先|件名"
    r"|日付|보낸\s?날짜|받는\s?사람|제목|참조|날짜|भेजा गया|प्रति|विषय|दिनांक"
)
_LABEL = re.compile(rf"^[\s>*]*({_FROM}|{_OTHER})\s?\*?\s?[:：]", re.IGNORECASE)
_FROM_LABEL = re.compile(rf"^[\s>*]*({_FROM})\s?\*?\s?[:：]", re.IGNORECASE)

# A line that sets the quote apart: "-----Original Message-----" and its translations,
# underscores, equals signs.
# "---- Ana wrote ----", "-------- Oprindelig besked --------": a title between dashes.
_TITLED = re.compile(r"^[\s>]*-{2,}\s*[^-\s][^-]{1,80}?\s*-{2,}\s*$")
_SEPARATOR = re.compile(
    r"^[\s>]*([-_=*]{4,}|-{2,}\s*("
    r"original message|forwarded message|ursprüngliche nachricht|mensaje original"
    r"|mensagem original|message d'origine|messaggio originale|oorspronkelijk bericht"
    r"|originalmeddelande|oprindelig meddelelse|opprinnelig melding|alkuperäinen viesti"
    r"|исходное сообщение|оригинальное сообщение|вихідне повідомлення|původní zpráva"
    r"|wiadomość oryginalna|oryginalna wiadomość|özgün ileti|orijinal mesaj|الرسالة الأصلية"
    r"|הודעה מקורית|原始邮件|原始郵件|元のメッセージ|원본 메시지|मूल संदेश"
    r")\s*-{2,})\s*$",
    re.IGNORECASE,
)

# What a client appends under a reply: "Sent from my iPhone" in many languages.
_SENT_FROM = re.compile(
    r"^\s*(sent from|sent with|get outlook for|enviado desde|enviado do|enviado de"
    r"|envoyé de|envoyé depuis|envoyé à partir de|von meinem|gesendet von|inviato da"
    r"|verzonden (vanaf|met)"
    r"|verstuurd vanaf|wysłane z|skickat från|sendt fra|lähetetty|отправлено с|надіслано з"
    r"|odesláno z|.{0,40}gönderildi$|أُرسلت من|ارسلت من|נשלח מ|发自我的|從我的|.{0,40}から送信"
    r"|.{0,40}에서 보냄|मेरे .{0,40} से भेजा गया"
    # Outlook's mobile app invites in its user's language: "Get Outlook for iOS".
    r"|.{0,20}outlook (for|para|pour|für|per|voor|dla|för|til|pro|для|için) (ios|android)"
    r".{0,20}$)",
    re.IGNORECASE,
)


def quote_depth(line: str) -> int:
    """How many ``>`` begin the line."""
    depth = 0
    for char in line[:MAX_LINE]:
        if char == ">":
            depth += 1
        elif char not in " \t":
            break
    return depth


def is_wrote_line(line: str) -> bool:
    """A one-line quote header in any of the languages ("On ..., Ana wrote:")."""
    if len(line) > MAX_LINE or not line.strip():
        return False
    match = _WROTE_LINE.match(line)
    if match is None:
        return False
    before = match.group(1)
    has_colon = bool(re.search(r"[:：]\s*(-{2,})?\s*$", line))
    # A verb at the end of a short sentence is not enough: a header names a date or a
    # person's address, or opens with the word clients use ("On", "Le", "Am", ...).
    dated = bool(re.search(r"\d", before)) or "@" in before
    # A client's header names a year, a time or an address; "On Monday my consultant
    # wrote:" in a reflection names none of them.
    if not _STAMPED.search(line):
        return False
    opens = bool(_WROTE_OPENERS.match(line))
    if not has_colon and not line.rstrip().endswith("-"):
        return opens and dated  # "On Wed, 14 Nov 2018 ... John <j@x> wrote", no colon
    return dated or opens


_STAMPED = re.compile(r"\d{4}|\d{1,2}[:.]\d{2}|@")


def is_date_address_line(line: str) -> bool:
    return len(line) <= MAX_LINE and bool(_DATE_ADDRESS.search(line.strip()))


def is_label_line(line: str) -> bool:
    return len(line) <= MAX_LINE and bool(_LABEL.match(line))


def label_of(line: str) -> str:
    """The label of a header-block line ("from", "gesendet", ...), "" when it is none."""
    match = _LABEL.match(line) if len(line) <= MAX_LINE else None
    return match.group(1).lower() if match else ""


def is_from_line(line: str) -> bool:
    return len(line) <= MAX_LINE and bool(_FROM_LABEL.match(line))


def is_separator(line: str) -> bool:
    return len(line) <= MAX_LINE and bool(_SEPARATOR.match(line) or _TITLED.match(line))


def is_titled_separator(line: str) -> bool:
    return len(line) <= MAX_LINE and bool(_TITLED.match(line))


def looks_like_header_start(line: str) -> bool:
    """How a one-line header begins: with a date or the word clients put first."""
    return len(line) <= MAX_LINE and bool(_WROTE_OPENERS.match(line) or _DIGIT.search(line[:80]))


_DIGIT = re.compile(r"\d")
# A header that shares its line with the end of the reply ("thanks--- On ... wrote:").
_INLINE_HEADER = re.compile(r"^(.{0,300}?\S)\s*-*\s*(On\s.{4,200}?\s(wrote|sent)\s*:)\s*$")


def split_inline_header(line: str) -> str | None:
    """The reply's part of a line that ends with a one-line header, or None."""
    if len(line) > MAX_LINE:
        return None
    match = _INLINE_HEADER.match(line)
    return match.group(1) if match and re.search(r"\d", match.group(2)) else None


def is_sent_from(line: str) -> bool:
    """A client's "Sent from my iPhone" line: short, so a sentence that starts with the
    same words ("Sent from the ward at 3 a.m., I ...") is the person's."""
    bare = re.sub(r"<[^>]{0,300}>|\(https?://[^)]{0,300}\)", "", line).strip()
    return len(bare) <= 50 and bool(_SENT_FROM.match(bare))


# The closing words of a letter, alone on their line above a name, per language.
_VALEDICTION = re.compile(
    r"^(best regards|kind regards|warm regards|regards|best wishes|best|thanks|thank you"
    r"|many thanks|cheers|sincerely|yours|all the best|take care|saludos|un saludo"
    r"|atentamente|gracias|abrazos|atenciosamente|abraços|cumprimentos|obrigad[oa]"
    r"|cordialement|bien à vous|merci|amicalement|bien cordialement|mit freundlichen grüßen"
    r"|mit freundlichen grüssen|viele grüße|liebe grüße|beste grüße|grüße|danke|lg|vg|mfg"
    r"|cordiali saluti|saluti|grazie|un saluto|met vriendelijke groet|groeten|groet|bedankt"
    r"|mvg|pozdrawiam|z poważaniem|dziękuję|med vänliga hälsningar|vänliga hälsningar"
    r"|hälsningar|mvh|tack|med venlig hilsen|venlig hilsen|hilsen|tak|med vennlig hilsen"
    r"|vennlig hilsen|takk|ystävällisin terveisin|terveisin|kiitos|с уважением|спасибо"
    r"|всего доброго|з повагою|дякую|s pozdravem|děkuji|díky|saygılarımla|teşekkürler"
    r"|iyi çalışmalar|مع خالص التحيات|مع التحية|شكرا|בברכה|תודה|谢谢|此致|祝好"
    r"|よろしくお願いします|よろしくお願いいたします|ありがとうございます|감사합니다|धन्यवाद|सादर"
    # Then the punctuation of the script: Latin, Arabic (، ؛), and the full-width forms.
    r")[\s,.!:;、。،؛，．！：；]*$",
    re.IGNORECASE,
)


def is_valediction(line: str) -> bool:
    return len(line) <= 60 and bool(_VALEDICTION.match(line.strip()))
