"""Replies to Day 3 in 22 languages, in the shapes mail clients give them.

Each language has a reply a physician might write, the one-line header its webmail or phone
client puts above a quote, its Outlook header labels and its "Sent from my phone" line (the
clients' formats as they write them; the replies are this project's own). ``shapes()`` builds
each reply five ways around the lesson as it was sent: top-posted over a ``>`` quote the
client wrapped anew, top-posted over an Outlook header block and the lesson unquoted,
bottom-posted under the quote, from a phone with its signature line, and over the lesson
with no header and no quote marks at all. ``lesson_text()``
is the lesson as sent (the text part of the real message).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from dripcourse.courses.course_folder import load_course
from dripcourse.courses.render import Personal, Renderer

EMAILS = Path(__file__).resolve().parent.parent / "emails"
SENDER = "The White Coat Reset <lessons@dripcourse.example>"
ANA = Personal(
    email="ana@example.org",
    name="Ana Okafor",
    reflect="https://course.example.org/r/AbCdEf123",
    journal="https://course.example.org/j/AbCdEf123",
    pause="https://course.example.org/p/AbCdEf123",
    unsubscribe="https://course.example.org/u/AbCdEf123",
    lesson="https://course.example.org/l/AbCdEf123",
    privacy="https://course.example.org/privacy",
)


@dataclass(frozen=True)
class Language:
    code: str
    reply: str
    wrote: str  # the one-line header, {sender} where the sender goes
    labels: tuple[str, str, str, str]  # From, Sent, To, Subject
    sent_from: str


LANGUAGES = [
    Language(
        "en",
        "Leaving the ward by 18:30 on Thursdays.\n\nI will tell the registrar on Monday.",
        "On Tue, 24 Nov 2026 at 07:00, {sender} wrote:",
        ("From", "Sent", "To", "Subject"),
        "Sent from my iPhone",
    ),
    Language(
        "es",
        "Los domingos sin guardias extra. Se lo diré a mi jefa.",
        "El mar, 24 nov 2026 a las 7:00, {sender} escribió:",
        ("De", "Enviado", "Para", "Asunto"),
        "Enviado desde mi iPhone",
    ),
    Language(
        "pt",
        "Almoço longe da enfermaria, vinte minutos, três dias por semana.",
        "Em ter., 24 de nov. de 2026 às 07:00, {sender} escreveu:",
        ("De", "Enviado", "Para", "Assunto"),
        "Enviado do meu iPhone",
    ),
    Language(
        "fr",
        "Plus de courriels après 21 h. C'est peu, mais j'y tiens.",
        "Le mar. 24 nov. 2026 à 07:00, {sender} a écrit :",
        ("De ", "Envoyé ", "À ", "Objet "),
        "Envoyé de mon iPhone",
    ),
    Language(
        "de",
        "Mittwochs keine Überstunden mehr. Das sage ich der Stationsleitung morgen.",
        "Am Di., 24. Nov. 2026 um 07:00 Uhr schrieb {sender}:",
        ("Von", "Gesendet", "An", "Betreff"),
        "Von meinem iPhone gesendet",
    ),
    Language(
        "it",
        "Niente reperibilità extra la domenica. Lo dirò al primario.",
        "Il giorno mar 24 nov 2026 alle ore 07:00 {sender} ha scritto:",
        ("Da", "Inviato", "A", "Oggetto"),
        "Inviato da iPhone",
    ),
    Language(
        "nl",
        "Na de dienst laat ik mijn pieper bij de arts-assistent.",
        "Op di 24 nov 2026 om 07:00 schreef {sender}:",
        ("Van", "Verzonden", "Aan", "Onderwerp"),
        "Verzonden vanaf mijn iPhone",
    ),
    Language(
        "pl",
        "Po dyżurze nie otwieram skrzynki. Powiem o tym ordynatorowi.",
        "wt., 24 lis 2026 o 07:00 {sender} napisał(a):",
        ("Od", "Wysłano", "Do", "Temat"),
        "Wysłane z iPhone'a",
    ),
    Language(
        "sv",
        "Ingen mejl efter klockan nio på kvällen.",
        "Den tis 24 nov. 2026 kl 07:00 skrev {sender}:",
        ("Från", "Skickat", "Till", "Ämne"),
        "Skickat från min iPhone",
    ),
    Language(
        "da",
        "Jeg spiser frokost væk fra afdelingen tre dage om ugen.",
        "Den tir. 24. nov. 2026 kl. 07.00 skrev {sender}:",
        ("Fra", "Sendt", "Til", "Emne"),
        "Sendt fra min iPhone",
    ),
    Language(
        "no",
        "Telefonen ligger med skjermen ned under det ene måltidet jeg får.",
        "tir. 24. nov. 2026 kl. 07:00 skrev {sender}:",
        ("Fra", "Sendt", "Til", "Emne"),
        "Sendt fra min iPhone",
    ),
    Language(
        "fi",
        "En lue työsähköpostia vapaapäivinä.",
        "ti 24.11.2026 klo 7.00 {sender} kirjoitti:",
        ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"),
        "Lähetetty iPhonesta",
    ),
    Language(
        "ru",
        "После дежурства не проверяю почту до утра.",
        "вт, 24 нояб. 2026 г. в 07:00, {sender}:",
        ("От", "Отправлено", "Кому", "Тема"),
        "Отправлено с iPhone",
    ),
    Language(
        "uk",
        "Обідаю поза відділенням хоча б двадцять хвилин.",
        "вт, 24 лист. 2026 р. о 07:00 {sender} пише:",
        ("Від", "Надіслано", "Кому", "Тема"),
        "Надіслано з iPhone",
    ),
    Language(
        "cs",
        "Po službě nechávám telefon v šatně.",
        "út 24. 11. 2026 v 7:00 odesílatel {sender} napsal:",
        ("Od", "Odesláno", "Komu", "Předmět"),
        "Odesláno z iPhonu",
    ),
    Language(
        "tr",
        "Nöbet sonrası e-postalara bakmıyorum.",
        "24 Kas 2026 Sal 07:00 tarihinde {sender} şunu yazdı:",
        ("Kimden", "Gönderildi", "Kime", "Konu"),
        "iPhone'umdan gönderildi",
    ),
    Language(
        "ar",
        "لن أرد على رسائل العمل بعد التاسعة مساءً.",
        "في الثلاثاء، 24 نوفمبر 2026 في 7:00 ص، كتب {sender}:",
        ("من", "تاريخ الإرسال", "إلى", "الموضوع"),
        "أُرسلت من الـ iPhone",
    ),
    Language(
        "he",
        "אחרי משמרת לילה אני לא פותחת את תיבת הדואר.",
        "בתאריך יום ג׳, 24 בנוב׳ 2026 ב-7:00 מאת {sender}:",
        ("מאת", "נשלח", "אל", "נושא"),
        "נשלח מה-iPhone שלי",
    ),
    Language(
        "zh",
        "每周四下班后不再查看工作邮件。",
        "{sender} 于2026年11月24日周二 07:00写道：",
        ("发件人", "发送时间", "收件人", "主题"),
        "发自我的iPhone",
    ),
    Language(
        "ja",
        "当直明けはメールを開かないことにします。",
        "2026年11月24日(火) 7:00 {sender}:",
        ("差出人", "送信日時", "宛先", "件名"),
        "iPhoneから送信",
    ),
    Language(
        "ko",
        "당직 다음 날에는 업무 메일을 열지 않겠습니다.",
        "2026년 11월 24일 (화) 오전 7:00, {sender}님이 작성:",
        ("보낸 사람", "보낸 날짜", "받는 사람", "제목"),
        "내 iPhone에서 보냄",
    ),
    Language(
        "hi",
        "रात की ड्यूटी के बाद मैं ईमेल नहीं देखूँगी।",
        "मंगल, 24 नव॰ 2026 को 7:00 am को {sender} ने लिखा:",
        ("प्रेषक", "भेजा गया", "प्रति", "विषय"),
        "मेरे iPhone से भेजा गया",
    ),
]


def lesson_text() -> str:
    """Day 3 as its text part was sent to Ana."""
    course = load_course(EMAILS, "white-coat")
    rendered = Renderer(EMAILS, reply_by_email=True).lesson(course, 3)
    return rendered.text.render(ANA)


def quoted(text: str) -> str:
    """The lesson as a webmail client quotes it: wrapped anew at 76, each line marked."""
    lines = []
    for line in text.split("\n"):
        wrapped = textwrap.wrap(line, 74, break_long_words=False) or [""]
        lines += [f"> {part}".rstrip() for part in wrapped]
    return "\n".join(lines)


def outlook_block(language: Language) -> str:
    from_, sent, to, subject = language.labels
    return "\n".join(
        [
            "________________________________",
            f"{from_}: {SENDER}",
            f"{sent}: 24 November 2026 07:00",
            f"{to}: Ana Okafor <ana@example.org>",
            f"{subject}: Day 3: Small boundaries on a real rota",
        ]
    )


def shapes(language: Language, lesson: str) -> dict[str, str]:
    """The reply in each shape, by name."""
    header = language.wrote.format(sender=SENDER)
    return {
        "top": f"{language.reply}\n\n{header}\n{quoted(lesson)}\n",
        "outlook": f"{language.reply}\n\n{outlook_block(language)}\n\n{lesson}\n",
        "bottom": f"{header}\n{quoted(lesson)}\n\n{language.reply}\n",
        "phone": f"{language.reply}\n\n{language.sent_from}\n\n{header}\n\n{quoted(lesson)}\n",
        # Some phone clients put the message answered under the reply with no header and
        # no quote marks: only knowing the lesson finds it.
        "bare": f"{language.reply}\n\n{lesson}\n",
    }
